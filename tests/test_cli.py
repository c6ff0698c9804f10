"""Command lines run from any folder, stay quiet, end a user error in one line, keep their old
flag names working, and the numpy-only ones never import jax."""

import json
import os
import subprocess
import sys

from conftest import REPO
from sleepfm_jax.data import synthetic

EXPERIMENTS = REPO / "experiments"


def _run(script, *args, cwd, timeout=300):
  return subprocess.run([sys.executable, str(EXPERIMENTS / script), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=timeout, check=False)


def _absl_info_lines(text):
  return [line for line in text.splitlines() if line[:1] == "I" and line[1:5].isdigit()]


def test_pretrain_without_its_store_names_the_command_that_makes_it(tmp_path):
  """The command the project is known by, on a fresh checkout: one line, no traceback."""
  proc = _run("pretrain.py", f"--flagfile={EXPERIMENTS / 'flagfiles' / 'demo.flags'}", cwd=tmp_path)
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert "runs/demo/stores/synthetic" in lines[0] and "experiments/demo.py" in lines[0]
  assert not (tmp_path / "runs").exists()


def test_preprocess_from_another_folder_with_the_old_names(tmp_path):
  """Default config from the package (not the working directory), the old --output flag and the
  old experiments/configs path still work (with a warning), and absl/INFO lines stay away."""
  synthetic.write_dataset(tmp_path / "edf", n_subjects=1, hours=0.25, seed=1, progress=False,
                          rates="eeg=64,eog=64,emg=64,ecg=64,resp=8,spo2=1")
  proc = _run("preprocess.py", "--input=edf", "--output=store", "--config.sample_rate=32",
              "--noprogress", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert "--output is deprecated; use --out" in proc.stderr
  assert not _absl_info_lines(proc.stderr), proc.stderr
  index = json.loads((tmp_path / "store" / "index.json").read_text())
  assert index["sample_rate"] == 32 and index["preprocessing"]["normalise"] == "robust"

  proc = _run("preprocess.py", "--input=edf", "--out=paper", "--noprogress",
              "--config=experiments/configs/preprocess.py:paper", "--config.sample_rate=32",
              cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert "configs moved into the package" in proc.stderr
  index = json.loads((tmp_path / "paper" / "index.json").read_text())
  assert index["preprocessing"]["normalise"] == "none" and index["dtype"] == "float32"

  proc = _run("preprocess.py", "--input=edf", "--out=a", "--output=b", cwd=tmp_path)
  assert proc.returncode != 0 and "not both" in proc.stderr


def test_numpy_only_clis_never_import_jax(tmp_path):
  """The evaluation, the spectral baseline and the results merger load no jax (imports done,
  flags parsed)."""
  code = ("import runpy, sys\n"
          "sys.argv = [sys.argv[1], '--helpshort']\n"
          "try:\n"
          "  runpy.run_path(sys.argv[0], run_name='__main__')\n"
          "except SystemExit:\n"
          "  pass\n"
          "print('JAX LOADED' if {'jax', 'flax', 'optax'} & set(sys.modules) else 'NO JAX')\n")
  for script in ("evaluate.py", "spectral_baseline.py", "merge_results.py"):
    proc = subprocess.run([sys.executable, "-c", code, str(EXPERIMENTS / script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.strip().endswith("NO JAX"), (script, proc.stdout[-500:], proc.stderr[-2000:])


def test_other_clis_start_from_another_folder(tmp_path):
  for script in ("train_supervised.py", "paper_experiments.py", "demo.py", "export_embeddings.py"):
    proc = _run(script, "--helpshort", cwd=tmp_path, timeout=120)
    assert "Traceback" not in proc.stderr and "--" in proc.stdout + proc.stderr, (script,
                                                                                 proc.stderr)


def test_compilation_cache_none_turns_it_off_even_with_jax_own_variable(tmp_path):
  """`--compilation_cache=none` is off even where $JAX_COMPILATION_CACHE_DIR is set (JAX would
  read it by itself); a folder turns it on there."""
  script = ("import sys, jax; from absl import flags; from sleepfm_jax import cli\n"
            "cli.define_compilation_cache_flag(); flags.FLAGS(sys.argv)\n"
            "cli.start()\n"
            "c = jax.config\n"
            "print(c.jax_enable_compilation_cache, c.jax_compilation_cache_dir)\n")
  env = dict(os.environ, PYTHONPATH=str(REPO),
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / "env_cache"))
  for flag, expected in (("none", f"False {tmp_path / 'env_cache'}"),
                         (str(tmp_path / "mine"), f"True {tmp_path / 'mine'}")):
    proc = subprocess.run([sys.executable, "-c", script, f"--compilation_cache={flag}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected
