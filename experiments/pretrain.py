r"""Contrastive pretraining of SleepFM encoders.

  python experiments/pretrain.py --flagfile=experiments/flagfiles/demo.flags
  python experiments/pretrain.py --config=experiments/configs/pretrain.py:paper \
      --config.data.store=/data/stores/shhs --workdir=runs/paper

Several processes (TPU pod slice, GPU hosts, or 2 processes on loopback for testing):
  python experiments/pretrain.py ... --coordinator_address=HOST:PORT --num_processes=N --process_id=i
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/pretrain.py:demo", "Config file and preset.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.", required=True)
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --workdir.")
_COORD = flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator HOST:PORT.")
_NPROC = flags.DEFINE_integer("num_processes", None, "Number of processes (jax.distributed).")
_PID = flags.DEFINE_integer("process_id", None, "This process's index (jax.distributed).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-process job detected automatically (TPU pod slice, Slurm, "
    "Open MPI): jax.distributed.initialize() with no arguments.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Simulate this many CPU devices (testing sharding on one machine).")


def main(argv):
  del argv
  from sleepfm_jax.training import hostmem  # pylint: disable=import-outside-toplevel
  hostmem.retain_freed_memory()  # before JAX starts its CPU client (see hostmem.py)
  if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep the console clean
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=import-outside-toplevel

  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  from sleepfm_jax.training import sharding  # pylint: disable=import-outside-toplevel

  sharding.initialize_distributed(_COORD.value, _NPROC.value, _PID.value, auto=_DISTRIBUTED.value)
  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  logging.info("devices: %s", jax.devices())
  summary = train.train(_CONFIG.value, _WORKDIR.value, resume=_RESUME.value)
  if jax.process_index() == 0:
    print({k: v for k, v in summary.items() if k in ("final_step", "train", "val")})
  jax.distributed.shutdown()  # leave the job now, not from an exit handler (no-op if none)


if __name__ == "__main__":
  app.run(main)
