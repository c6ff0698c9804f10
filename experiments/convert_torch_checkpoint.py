r"""Converts an original SleepFM (PyTorch) checkpoint into this project's Orbax checkpoint.

  python experiments/convert_torch_checkpoint.py --input=/path/to/best.pt \
      --out=runs/converted/sleepfm_original
  # then, as for any checkpoint of this project:
  python experiments/export_embeddings.py --checkpoint=runs/converted/sleepfm_original \
      --input=/data/my_psg --out=runs/converted/embeddings

The `.pt` file (`respiratory_state_dict`, `sleep_stages_state_dict`, `ekg_state_dict`,
`temperature`; `module.` prefixes from DataParallel are stripped) is read with
`torch.load(weights_only=True)`, so no pickled code runs. Shapes must match the encoders built from
`--config` (the original architecture: `pretrain.py:paper`); a mismatch is refused naming
the modality and key. The checkpoint's meta records how new recordings must be preprocessed for
these weights (`--preprocess_config`, default the original's: montage "paper", 256 Hz, 30-s
windows, raw ADC counts, FFT resampling, the original's window alignment), so
`export_embeddings.py --input=...` and `sleepfm_jax.embed` prepare recordings as the original did.
Needs PyTorch (`pip install torch==2.13.0`).
"""

from absl import app, flags

from sleepfm_jax import cli

_INPUT = flags.DEFINE_string("input", None, "Original SleepFM .pt checkpoint.", required=True)
_OUT = flags.DEFINE_string("out", None, "Directory of the new checkpoint.")
_CONFIG = cli.define_config("pretrain", "paper", "Pretraining config of the encoders.")
_PREP = cli.define_config(
    "preprocess", "paper", "How windows are prepared for these weights (montage, rate, "
    "normalisation): a preset of preprocess.py or FILE.py[:ARG].", name="preprocess_config")
_CHANNELS = flags.DEFINE_multi_string(
    "channels", None, "MODALITY=CH1,CH2,... input channel names in the encoder's order "
    "(default: the montage's channels), e.g. --channels=resp=Thorax,SpO2,Abdomen.")
cli.define_renamed("output", "out")
cli.require("out")
cli.define_compilation_cache_flag()


def main(argv):
  del argv
  cli.start()
  from sleepfm_jax.training import convert  # pylint: disable=import-outside-toplevel

  channels = {}
  for item in _CHANNELS.value or ():
    modality, _, names = item.partition("=")
    if not names:
      raise app.UsageError(f"--channels expects MODALITY=CH1,CH2,...; got {item!r}")
    channels[modality.strip()] = [c.strip() for c in names.split(",")]
  path = convert.original_checkpoint_to_orbax(
      _INPUT.value, _OUT.value, config=_CONFIG.value, preprocessing=_PREP.value.to_dict(),
      channels=channels or None)
  print(f"wrote {path}")


if __name__ == "__main__":
  cli.run(main)
