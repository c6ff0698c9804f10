r"""Contrastive pretraining of SleepFM encoders.

  python experiments/pretrain.py --flagfile=experiments/flagfiles/demo.flags
  python experiments/pretrain.py --config=paper --config.data.store=/data/stores/shhs \
      --workdir=runs/paper

`--config` is a preset of the package's `configs/pretrain.py` (demo, sleepedf, paper; options such
as `demo,quick`) or FILE.py[:ARG]. Several processes (TPU pod slice, GPU hosts, or 2 processes on
loopback for testing):
  python experiments/pretrain.py ... --coordinator_address=HOST:PORT --num_processes=N --process_id=i
"""

from absl import flags, logging

from sleepfm_jax import cli

_CONFIG = cli.define_config("pretrain", "demo")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.", required=True)
_RESUME = flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --workdir.")
cli.define_distributed_flags()
cli.define_cpu_devices_flag()
cli.define_compilation_cache_flag()


def main(argv):
  del argv
  config = _CONFIG.value
  cli.require_store(config.data.store, "--config.data.store")
  cli.start()
  import jax  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  logging.info("devices: %s", jax.devices())
  summary = train.train(config, _WORKDIR.value, resume=_RESUME.value)
  if jax.process_index() == 0:
    print({k: v for k, v in summary.items() if k in ("final_step", "train", "val")})
  jax.distributed.shutdown()  # leave the job now, not from an exit handler (no-op if none)


if __name__ == "__main__":
  cli.run(main)
