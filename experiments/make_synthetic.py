r"""Writes a SYNTHETIC three-modality PSG data set (EDF+ signals, EDF+/CSV annotations, manifest).

The data are synthetic, not real physiology; see docs/synthetic.md.

  python experiments/make_synthetic.py --out=data/synthetic --subjects=20 --hours=8 \
      --sample_rates=eeg=256,eog=256,emg=256,ecg=512,resp=32,spo2=1 --workers=2

Optionally `--figures_dir=docs/figures` also renders the documentation figures. Flag defaults are
those of `sleepfm_jax.data.synthetic.write_dataset`.
"""

from collections.abc import Sequence
import inspect
import json
import pathlib

from absl import app
from absl import flags
from absl import logging

from sleepfm_jax import cli
from sleepfm_jax.data import synthetic

_DEFAULT = {k: p.default for k, p in inspect.signature(synthetic.write_dataset).parameters.items()}
_OUT = flags.DEFINE_string("out", None, "Folder for the data set.")
_SUBJECTS = flags.DEFINE_integer("subjects", 10, "Number of subjects.")
_NIGHTS = flags.DEFINE_integer("nights", _DEFAULT["nights"], "Nights per subject.")
_HOURS = flags.DEFINE_float("hours", _DEFAULT["hours"],
                            "Recording length per night (rounded to 30-s epochs).")
_SEED = flags.DEFINE_integer("seed", _DEFAULT["seed"],
                             "Data-set seed; output is a pure function of it.")
_CHANNEL_SET = flags.DEFINE_string(
    "channel_set", _DEFAULT["channel_set"],
    f"One of {sorted(synthetic.CHANNEL_SETS)} or comma-separated canonical channel names "
    f"({', '.join(synthetic.CHANNELS)}).")
_SAMPLE_RATES = flags.DEFINE_string(
    "sample_rates", ",".join(f"{k}={v:g}" for k, v in synthetic.DEFAULT_RATES.items()),
    "Sampling rate (Hz) per channel group: eeg, eog, emg, ecg, resp (airflow and belts), spo2.")
_WORKERS = flags.DEFINE_integer("workers", _DEFAULT["workers"],
                                "Processes (nights are generated in parallel).")
_ANNOTATIONS = flags.DEFINE_list("annotations", list(_DEFAULT["annotation_formats"]),
                                 "Annotation files to write: edf (<stem>-annotations.edf), csv.")
_MISSING_PROB = flags.DEFINE_float("missing_prob", _DEFAULT["missing_prob"],
                                   "Scales the chance that a subject lacks a channel group.")
_DISTRACTOR_PROB = flags.DEFINE_float("distractor_prob", _DEFAULT["distractor_prob"],
                                      "Chance of an extra 'Position' channel per subject.")
_COUPLING = flags.DEFINE_enum(
    "coupling", _DEFAULT["coupling"], list(synthetic.COUPLINGS),
    "physiological: every modality renders one latent physiology (shared breaths, beats, arousals, "
    "movements); none: each modality renders its own (the negative control).")
_STAGE_GAIN = flags.DEFINE_float(
    "stage_gain", 1.0, "Scales how far heart rate, breathing rate and tidal depth move with the "
    "stage (1: literature-sized; larger: a positive control, not physiology; 0 to 5).")
_FIGURES_DIR = flags.DEFINE_string("figures_dir", None,
                                   "If set, also render the docs figures (PNG) there.")
cli.define_renamed("output_dir", "out")
cli.define_renamed("rates", "sample_rates")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.start(jax=False)
  if _OUT.value is None and _FIGURES_DIR.value is None:
    raise app.UsageError("give --out (and/or --figures_dir)")
  if _OUT.value is not None:
    manifest = synthetic.write_dataset(
        _OUT.value, _SUBJECTS.value, nights=_NIGHTS.value, hours=_HOURS.value,
        seed=_SEED.value, rates=_SAMPLE_RATES.value, channel_set=_CHANNEL_SET.value,
        workers=_WORKERS.value, annotation_formats=_ANNOTATIONS.value,
        missing_prob=_MISSING_PROB.value, distractor_prob=_DISTRACTOR_PROB.value,
        coupling=_COUPLING.value, stage_gain=_STAGE_GAIN.value)
    out = pathlib.Path(_OUT.value)
    report = json.loads((out / "generation_report.json").read_text())
    logging.info("wrote %d nights (%d subjects) to %s", report["nights"],
                 len(manifest["subjects"]), out)
    print(f"SYNTHETIC data set: {report['nights']} nights, {report['night_hours']:.1f} night-hours "
          f"in {report['wall_s']:.1f} s with {report['workers']} worker(s); generation "
          f"{report['generate_s_per_night_hour']:.2f} s and EDF writing "
          f"{report['write_s_per_night_hour']:.2f} s per night-hour (one core) -> {out}")
  if _FIGURES_DIR.value is not None:
    import synthetic_figures  # pylint: disable=import-outside-toplevel  (this script's folder)

    paths = synthetic_figures.render_all(_FIGURES_DIR.value, seed=_SEED.value)
    print("figures:", *paths, sep="\n  ")


if __name__ == "__main__":
  cli.run(main)
