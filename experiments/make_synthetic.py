r"""Writes a SYNTHETIC three-modality PSG data set (EDF+ signals, EDF+/CSV annotations, manifest).

The data are synthetic, not real physiology; see docs/synthetic.md.

  python experiments/make_synthetic.py --output_dir=data/synthetic --subjects=20 --hours=8 \
      --rates=eeg=256,eog=256,emg=256,ecg=512,resp=32,spo2=1 --workers=2

Optionally `--figures_dir=docs/figures` also renders the documentation figures.
"""

from collections.abc import Sequence
import json
import pathlib
import sys

from absl import app
from absl import flags
from absl import logging

from sleepfm_jax.data import synthetic

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Folder for the data set.")
_SUBJECTS = flags.DEFINE_integer("subjects", 10, "Number of subjects.")
_NIGHTS = flags.DEFINE_integer("nights", 1, "Nights per subject.")
_HOURS = flags.DEFINE_float("hours", 8.0, "Recording length per night (rounded to 30-s epochs).")
_SEED = flags.DEFINE_integer("seed", 0, "Data-set seed; output is a pure function of it.")
_CHANNEL_SET = flags.DEFINE_string(
    "channel_set", "standard",
    f"One of {sorted(synthetic.CHANNEL_SETS)} or comma-separated canonical channel names "
    f"({', '.join(synthetic.CHANNELS)}).")
_RATES = flags.DEFINE_string(
    "rates", ",".join(f"{k}={v:g}" for k, v in synthetic.DEFAULT_RATES.items()),
    "Sampling rate per channel group: eeg, eog, emg, ecg, resp (airflow and belts), spo2.")
_WORKERS = flags.DEFINE_integer("workers", 1, "Processes (nights are generated in parallel).")
_ANNOTATIONS = flags.DEFINE_list("annotations", ["edf", "csv"],
                                 "Annotation files to write: edf (<stem>-annotations.edf), csv.")
_MISSING_PROB = flags.DEFINE_float("missing_prob", 1.0,
                                   "Scales the chance that a subject lacks a channel group.")
_DISTRACTOR_PROB = flags.DEFINE_float("distractor_prob", 0.3,
                                      "Chance of an extra 'Position' channel per subject.")
_COUPLING = flags.DEFINE_enum(
    "coupling", "physiological", list(synthetic.COUPLINGS),
    "physiological: every modality renders one latent physiology (shared breaths, beats, arousals, "
    "movements); none: each modality renders its own (the negative control).")
_FIGURES_DIR = flags.DEFINE_string("figures_dir", None,
                                   "If set, also render the docs figures (PNG) there.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _OUTPUT_DIR.value is None and _FIGURES_DIR.value is None:
    raise app.UsageError("give --output_dir (and/or --figures_dir)")
  if _OUTPUT_DIR.value is not None:
    manifest = synthetic.write_dataset(
        _OUTPUT_DIR.value, _SUBJECTS.value, nights=_NIGHTS.value, hours=_HOURS.value,
        seed=_SEED.value, rates=_RATES.value, channel_set=_CHANNEL_SET.value,
        workers=_WORKERS.value, annotation_formats=_ANNOTATIONS.value,
        missing_prob=_MISSING_PROB.value, distractor_prob=_DISTRACTOR_PROB.value,
        coupling=_COUPLING.value)
    out = pathlib.Path(_OUTPUT_DIR.value)
    report = json.loads((out / "generation_report.json").read_text())
    logging.info("wrote %d nights (%d subjects) to %s", report["nights"],
                 len(manifest["subjects"]), out)
    print(f"SYNTHETIC data set: {report['nights']} nights, {report['night_hours']:.1f} night-hours "
          f"in {report['wall_s']:.1f} s with {report['workers']} worker(s); generation "
          f"{report['generate_s_per_night_hour']:.2f} s and EDF writing "
          f"{report['write_s_per_night_hour']:.2f} s per night-hour (one core) -> {out}")
  if _FIGURES_DIR.value is not None:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import synthetic_figures  # pylint: disable=import-outside-toplevel

    paths = synthetic_figures.render_all(_FIGURES_DIR.value, seed=_SEED.value)
    print("figures:", *paths, sep="\n  ")


if __name__ == "__main__":
  app.run(main)
