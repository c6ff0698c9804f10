r"""Multi-seed evidence that pretraining learns (docs/results.md), per data set.

  python experiments/evidence.py --dataset=synthetic --workdir=runs/evidence/synthetic \
      --out=docs/results/synthetic.json
  python experiments/evidence.py --dataset=sleepedf --workdir=runs/evidence/sleepedf \
      --out=docs/results/sleepedf.json
  python experiments/render_results.py          # regenerate docs/results.md's tables

Every model is trained once per seed (`--seeds`); finished units (pretraining runs, exports,
probe sets, CNN sets) are reused when re-run, so more seeds can be added later. What each
experiment does: `sleepfm_jax/evidence.py`. The JSON holds one row per (model, seed, task,
feature, label budget), plus retrieval rows and each model's training budget.
"""

import json
import pathlib
import time

from absl import flags

from sleepfm_jax import cli, evidence

_DEFAULT = evidence.Settings()
_DATASET = flags.DEFINE_enum("dataset", _DEFAULT.dataset, ["synthetic", "sleepedf"], "Which data.")
_WORKDIR = flags.DEFINE_string("workdir", _DEFAULT.workdir, "Where runs and caches go.")
_OUT = flags.DEFINE_string("out", None, "Also write the results JSON here (docs/results/...).")
_SEEDS = flags.DEFINE_list("seeds", [str(s) for s in _DEFAULT.seeds], "Seeds of every model.")
_RATE = flags.DEFINE_integer("sample_rate", _DEFAULT.sample_rate, "Store sampling rate (Hz).")
_SUBJECTS = flags.DEFINE_integer("subjects", _DEFAULT.subjects, "SYNTHETIC subjects.")
_HOURS = flags.DEFINE_float("hours", _DEFAULT.hours, "Hours per SYNTHETIC night.")
_STEPS = flags.DEFINE_integer("steps", _DEFAULT.steps, "Pretraining steps per run.")
_MODES = flags.DEFINE_list("modes", list(_DEFAULT.modes), "Contrastive losses (synthetic).")
_LABEL_SUBJECTS = flags.DEFINE_list(
    "label_subjects", [str(k) for k in _DEFAULT.label_subjects],
    "SYNTHETIC label budgets: labelled subjects per outer fold (0 = all).")
_FRACTIONS = flags.DEFINE_list("label_fractions", [f"{f:g}" for f in _DEFAULT.label_fractions],
                               "SC4001 label budgets: fractions of each fold's labels.")
_CNN_SUBJECTS = flags.DEFINE_list(
    "cnn_label_subjects", [], "SYNTHETIC: the CNN's label budgets, a subset of --label_subjects "
    "(default: all of them).")
_CNN_FRACTIONS = flags.DEFINE_list(
    "cnn_label_fractions", [], "SC4001: the CNN's label budgets, a subset of --label_fractions "
    "(default: all of them).")
_FOLDS = flags.DEFINE_integer("outer_folds", _DEFAULT.outer_folds, "Outer folds.")
_CNN = flags.DEFINE_bool("cnn", _DEFAULT.cnn, "Train the end-to-end CNN baseline.")
_SPECTRAL = flags.DEFINE_bool("spectral", _DEFAULT.spectral, "Run the spectral baseline.")
_SPECTRAL_MODALITIES = flags.DEFINE_list(
    "spectral_modalities", [], "Also the spectral features of some modalities only, each a "
    "probe source spectral_<entry> (e.g. bas,ecg,resp,ecg+resp): which modality carries a task.")
_STAGE_GAIN = flags.DEFINE_float(
    "stage_gain", _DEFAULT.stage_gain, "SYNTHETIC: scales the stage's effect on heart rate, "
    "breathing rate and depth (1 = literature-sized; larger = a positive control).")
_CONTROL = flags.DEFINE_bool("uncoupled_control", _DEFAULT.uncoupled_control,
                             "SYNTHETIC: also pretrain on coupling='none' nights.")
_DTYPE = flags.DEFINE_enum("dtype", _DEFAULT.dtype, ["float32", "bfloat16"],
                           "Pretraining compute dtype (the bf16 comparison, docs/model.md).")
_EXPORT_DTYPE = flags.DEFINE_enum(
    "export_dtype", "", ["", "float32", "bfloat16"],
    "Compute dtype of the embedding export ('' = the pretraining dtype).")
_WIDTH = flags.DEFINE_float("width", _DEFAULT.width, "Scales the encoders' widths and head.")
_OVERRIDES = flags.DEFINE_list(
    "pretrain_overrides", [], "Pretraining config overrides, key=value (e.g. optim.lr=0.001,"
    "loss.temperature_init=2.0): one setting of a sweep; give each its own --workdir.")
_FEATURES = flags.DEFINE_enum(
    "features", _DEFAULT.features, ["embedding", "pooled"],
    "What the probes read: the contrastive embeddings, or each encoder's pooled features before "
    "its final linear layer (pretrained and untrained alike; no retrieval then).")
_CALIBRATED = flags.DEFINE_integer(
    "calibrated_control", _DEFAULT.calibrated_control, "SYNTHETIC: also score the untrained "
    "encoders with BatchNorm statistics estimated on this many batches of pretraining windows "
    "(source untrained_cal; 0 = not).")
_NORMALISE = flags.DEFINE_enum(
    "normalise", _DEFAULT.normalise, ["robust", "none"], "SYNTHETIC: the store's input "
    "normalisation (robust per channel and recording; none: physical units, as the original).")
_SLEEPEDF = flags.DEFINE_string("sleepedf_dir", None, "Folder with SC4001E0-PSG.edf + hypnogram "
                                "(default: ../shared/data/psg-real/sleep-edfx/sleep-cassette).")

_REPO = pathlib.Path(__file__).resolve().parents[1]


def main(argv):
  del argv
  cli.start()
  settings = evidence.Settings(
      dataset=_DATASET.value, workdir=_WORKDIR.value, seeds=tuple(int(s) for s in _SEEDS.value),
      sample_rate=_RATE.value, subjects=_SUBJECTS.value, hours=_HOURS.value, steps=_STEPS.value,
      modes=tuple(_MODES.value), label_subjects=tuple(int(k) for k in _LABEL_SUBJECTS.value),
      label_fractions=tuple(float(f) for f in _FRACTIONS.value), outer_folds=_FOLDS.value,
      cnn=_CNN.value, cnn_label_subjects=tuple(int(k) for k in _CNN_SUBJECTS.value),
      cnn_label_fractions=tuple(float(f) for f in _CNN_FRACTIONS.value),
      spectral=_SPECTRAL.value, spectral_modalities=tuple(_SPECTRAL_MODALITIES.value),
      uncoupled_control=_CONTROL.value, stage_gain=_STAGE_GAIN.value, dtype=_DTYPE.value,
      export_dtype=_EXPORT_DTYPE.value,
      width=_WIDTH.value, pretrain_overrides=tuple(_OVERRIDES.value), features=_FEATURES.value,
      calibrated_control=_CALIBRATED.value, normalise=_NORMALISE.value,
      sleepedf_dir=_SLEEPEDF.value or str(_REPO.parent / "shared" / "data" / "psg-real" /
                                          "sleep-edfx" / "sleep-cassette"))
  t0 = time.time()
  result = evidence.run(settings, log=lambda m: print(m, flush=True))
  result["wall_s"] = round(time.time() - t0, 1)
  result["command"] = "python experiments/evidence.py " + " ".join(
      f"--{f.name}={f.value}" for f in flags.FLAGS.get_key_flags_for_module(__name__)
      if f.present)
  if _OUT.value:
    pathlib.Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(_OUT.value).write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
