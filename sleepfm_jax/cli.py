"""What every command line in `experiments/` shares, written once: flags, the start-up preamble and
how user errors end.

A CLI defines its flags (the shared ones through the `define_*` functions here), then

    def main(argv):
      cli.start()              # allocator, quiet logs, renamed flags, and (jax=True) JAX's set-up
      ...

    if __name__ == "__main__":
      cli.run(main)            # absl's app.run; a user error ends in one line, not a traceback

`start` does, in this order: log at WARNING unless `--verbosity` is given (Orbax and absl otherwise
print INFO lines for every save); map deprecated flag names onto their new names (with a warning);
and for JAX programs: keep freed host memory for reuse and run CPU computations inline, so that
a step frees its temporaries before the next allocates them (`training.hostmem`), the
persistent compilation cache (`--compilation_cache`, on by default), simulated CPU
devices (`--cpu_devices`) and `jax.distributed` (`--distributed` or `--coordinator_address`).

`--config` flags take a config of this package by name (`--config=paper`, `--config=demo,quick`,
`--config=pretrain.py:paper`) or any config file (`--config=/path/my.py:arg`), so a CLI runs from
any working directory. Nothing here imports jax at import time: numpy-only CLIs (evaluation,
spectral baseline) use it too.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "configs"
CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"  # JAX's own variable; the flag's default when set
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)

_renamed: dict[str, str] = {}  # old flag name -> new flag name

# ----------------------------------------------------------------------------------------------
# Config flags
# ----------------------------------------------------------------------------------------------


def config_path(value: str, kind: str) -> str:
  """`FILE.py[:ARG]` for a `--config` value (see the module docstring).

  Args:
    value: "PRESET[,OPTIONS]", "NAME.py[:ARG]" (a config file of this package, also under its old
      location experiments/configs/), or a path to a config file, optionally with ":ARG".
    kind: the package config the CLI reads by default ("pretrain", "supervised", "preprocess").
  """
  file, sep, arg = value.partition(":")
  if not file.endswith(".py"):  # a preset (and options) of the CLI's own config
    return f"{CONFIG_DIR / f'{kind}.py'}:{value}"
  if os.path.exists(file):
    return value
  packaged = CONFIG_DIR / os.path.basename(file)
  if packaged.exists():
    if "experiments/configs" in file.replace(os.sep, "/"):
      logging.warning("--config=%s: configs moved into the package; use --config=%s%s%s",
                      value, packaged.name, sep, arg)
    return f"{packaged}{sep}{arg}"
  return value  # let ml_collections report the missing file


class _ConfigParser(flags.ArgumentParser):
  """Wraps ml_collections' config file parser: it reads `config_path(value, kind)`."""

  def __init__(self, parser: flags.ArgumentParser, kind: str):
    self._parser = parser
    self._kind = kind

  def parse(self, argument):
    return self._parser.parse(config_path(argument, self._kind))

  def flag_type(self):
    return self._parser.flag_type()


def define_config(kind: str, default: str, help_string: str = "", *, name: str = "config",
                  lock_config: bool = True) -> flags.FlagHolder:
  """A `--config` flag over the package's `<kind>.py` configs; `default` is "PRESET[,OPTIONS]"."""
  holder = config_flags.DEFINE_config_file(
      name, config_path(default, kind),
      help_string or f"Config: a preset of {kind}.py (e.g. {default}) or FILE.py[:ARG]; override "
      f"fields with --{name}.FIELD=VALUE.", lock_config=lock_config)
  FLAGS[name].parser = _ConfigParser(FLAGS[name].parser, kind)
  return holder


# ----------------------------------------------------------------------------------------------
# Shared flags
# ----------------------------------------------------------------------------------------------


def define_distributed_flags() -> None:
  """--coordinator_address, --num_processes, --process_id, --distributed (read by `start`)."""
  flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator HOST:PORT.")
  flags.DEFINE_integer("num_processes", None, "Number of processes (jax.distributed).")
  flags.DEFINE_integer("process_id", None, "This process's index (jax.distributed).")
  flags.DEFINE_bool("distributed", False, "Join a multi-process job detected automatically (TPU "
                    "pod slice, Slurm, Open MPI): jax.distributed.initialize() with no arguments.")


def define_cpu_devices_flag() -> None:
  flags.DEFINE_integer("cpu_devices", None,
                       "Simulate this many CPU devices (testing sharding on one machine).")


def define_compilation_cache_flag() -> None:
  flags.DEFINE_string(
      "compilation_cache", None,
      f"Persistent JAX compilation cache folder; 'none' turns it off. Default: ${CACHE_ENV} if "
      f"set, else {default_cache_dir()}.")


def define_split_from_checkpoint_flag() -> flags.FlagHolder:
  return flags.DEFINE_string(
      "split_from_checkpoint", None,
      "A pretraining work directory (or checkpoint in it): use its held-out 'downstream' "
      "recordings and its input channels.")


def define_renamed(old: str, new: str) -> None:
  """Keeps `--old` working for the flag now called `--new` (same type), with a warning."""
  kinds = {"comma separated list of strings": flags.DEFINE_list,
           "multi string": flags.DEFINE_multi_string, "bool": flags.DEFINE_bool,
           "int": flags.DEFINE_integer, "float": flags.DEFINE_float}
  define = kinds.get(FLAGS[new].flag_type(), flags.DEFINE_string)
  define(old, None, f"Deprecated: the old name of --{new}.")
  _renamed[old] = new


def require(*names: str) -> None:
  """Marks flags as required, also when given under a deprecated name (`define_renamed`)."""
  for name in names:
    old = [o for o, n in _renamed.items() if n == name]
    flags.register_multi_flags_validator(
        [name, *old], lambda values: any(v is not None for v in values.values()),
        message=f"--{name} must be given")


# The probe protocol's settings as flags: name -> (ProbeConfig field, help). Defaults are
# ProbeConfig's, so they are written once (in the dataclass).
PROBE_FLAGS = {
    "folds": ("outer_folds", "Outer cross-validation folds (grouped by subject)."),
    "inner_folds": ("inner_folds", "Inner folds for choosing C."),
    "c_grid": ("c_grid", "C values tried by the inner folds."),
    "max_iter": ("max_iter", "lbfgs iteration cap (non-convergence is reported)."),
    "class_weight": ("class_weight", "LogisticRegression class weighting: balanced or none."),
    "gap": ("gap", "Windows dropped between train/test blocks (one subject)."),
    "seed": ("seed", "Seed of folds and label subsampling."),
    "scaler": ("scaler", "StandardScaler fit on every window of the outer training fold ('fold', "
               "labels unused) or on its labelled windows at the label fraction ('labelled')."),
    "blas_threads": ("blas_threads", "BLAS threads per fit (0: the library default)."),
}


def define_probe_flags(names: Sequence[str] = tuple(PROBE_FLAGS)) -> None:
  """Flags for the given `ProbeConfig` settings, with ProbeConfig's defaults."""
  from sleepfm_jax.evaluation import probes  # pylint: disable=import-outside-toplevel

  default = probes.ProbeConfig()
  for name in names:
    field, help_string = PROBE_FLAGS[name]
    value = getattr(default, field)
    if name == "c_grid":
      flags.DEFINE_list(name, [f"{c:g}" for c in value], help_string)
    elif name == "class_weight":
      flags.DEFINE_enum(name, value or "none", ["balanced", "none"], help_string)
    elif name == "scaler":
      flags.DEFINE_enum(name, value, list(probes.SCALERS), help_string)
    elif name == "blas_threads":
      flags.DEFINE_integer(name, value or 0, help_string)
    else:
      flags.DEFINE_integer(name, value, help_string)


def probe_config():
  """The `ProbeConfig` of the probe flags this CLI defined (others at their defaults)."""
  from sleepfm_jax.evaluation import probes  # pylint: disable=import-outside-toplevel

  convert: dict[str, Callable[[Any], Any]] = {
      "c_grid": lambda v: tuple(float(c) for c in v),
      "class_weight": lambda v: None if v == "none" else v,
      "blas_threads": lambda v: v or None}
  kwargs = {field: convert.get(name, lambda v: v)(FLAGS[name].value)
            for name, (field, _) in PROBE_FLAGS.items() if name in FLAGS}
  return probes.ProbeConfig(**kwargs)


def define_label_fractions_flag() -> None:
  from sleepfm_jax.evaluation import suite  # pylint: disable=import-outside-toplevel

  flags.DEFINE_list("label_fractions", [f"{f:g}" for f in suite.SuiteConfig.label_fractions],
                    "Fractions of each training fold's labels, e.g. 0.01,0.1,1.0.")


# ----------------------------------------------------------------------------------------------
# Start-up and exit
# ----------------------------------------------------------------------------------------------


def default_cache_dir() -> str:
  """Per-user cache folder of compiled XLA programs: $XDG_CACHE_HOME/sleepfm-jax/jax or
  ~/.cache/sleepfm-jax/jax."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "sleepfm-jax", "jax")


def _apply_renamed() -> None:
  for old, new in _renamed.items():
    if FLAGS[old].present:
      if FLAGS[new].present:
        raise app.UsageError(f"give --{new} or its old name --{old}, not both")
      FLAGS[new].value = FLAGS[old].value
      print(f"warning: --{old} is deprecated; use --{new}", file=sys.stderr)


def _value(name: str, default: Any = None) -> Any:
  return FLAGS[name].value if name in FLAGS else default


def start(*, jax: bool = True) -> None:
  """The preamble of every CLI's `main` (module docstring); `jax=False` for numpy-only tools."""
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  _apply_renamed()
  if not jax:
    return
  from sleepfm_jax.training import hostmem  # pylint: disable=import-outside-toplevel

  hostmem.retain_freed_memory()  # before JAX starts its CPU client (see hostmem.py)
  hostmem.run_cpu_computations_inline()  # what retained memory needs (see hostmem.py)
  import jax as jax_lib  # pylint: disable=import-outside-toplevel

  cache = _value("compilation_cache")
  if cache is None:
    cache = os.environ.get(CACHE_ENV) or default_cache_dir()
  if cache.lower() != "none":
    jax_lib.config.update("jax_compilation_cache_dir", cache)
  else:  # off even where JAX would find $JAX_COMPILATION_CACHE_DIR by itself
    jax_lib.config.update("jax_enable_compilation_cache", False)
  if _value("cpu_devices"):
    jax_lib.config.update("jax_num_cpu_devices", _value("cpu_devices"))
  if "distributed" in FLAGS:
    from sleepfm_jax.training import sharding  # pylint: disable=import-outside-toplevel

    sharding.initialize_distributed(_value("coordinator_address"), _value("num_processes"),
                                    _value("process_id"), auto=_value("distributed"))


def run(main: Callable[[list[str]], Any]) -> None:
  """`app.run(main)`; a user error (bad input, config or path) ends in one line on stderr, exit
  status 1. `--verbosity=0` (or more) shows the traceback instead."""

  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      if FLAGS["verbosity"].present and FLAGS["verbosity"].value >= 0:
        raise
      message = " ".join(str(e).split()) or type(e).__name__
      print(f"error: {message}  (--verbosity=0 shows the traceback)", file=sys.stderr)
      sys.exit(1)

  app.run(wrapped)


def require_store(path: str, flag: str) -> None:
  """Stops with one line naming the command that makes the window store at `path`."""
  if os.path.exists(os.path.join(path, "index.json")):
    return
  demo = os.path.normpath(path) == os.path.join("runs", "demo", "stores", "synthetic")
  how = ("`python experiments/demo.py --workdir=runs/demo` makes it (the whole demo, SYNTHETIC data)"
         if demo else "`python experiments/preprocess.py --input=PSG_FOLDER --out=STORE` makes one")
  raise FileNotFoundError(f"{path or '(empty)'}: no window store there; {how}, or pass {flag}=STORE")
