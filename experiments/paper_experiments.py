r"""The paper's experiments at laptop scale, recorded in docs/results.md.

  # 1. real Sleep-EDF SC4001 (BAS + respiratory, no ECG): LOO vs pairwise vs CNN vs spectral,
  #    staging on time-blocked folds of the one night
  python experiments/paper_experiments.py --dataset=sleepedf --workdir=runs/results
  # 2 + 3. SYNTHETIC three-modality nights with apneas (subject-wise folds), staging + SDB +
  #    retrieval, label fractions 1 %, 10 %, 100 %
  python experiments/paper_experiments.py --dataset=synthetic --workdir=runs/results

Per dataset: preprocess into a window store (--sample_rate; the paper uses 256 Hz), pretrain the
encoders with each contrastive loss (--modes), export the held-out recordings (synthetic: the
downstream subjects no pretraining run saw; SC4001: the whole night, the only one there is —
pretraining used none of its labels), then score on those windows, with the same outer folds and
label subsets: logistic-regression probes on each embedding set, the spectral-feature baseline,
the end-to-end supervised CNN (the package's `configs/supervised.py:demo`, trained from scratch in every
outer fold) and, as a control, the same encoders untrained (random weights). Writes
`<workdir>/<dataset>/results.json` (compact table) and a full report (`report/report.md`, plots).
Finished steps are reused when re-run.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app, flags

from sleepfm_jax import cli

_DATASET = flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "sleepedf"], "Which data.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/results", "Output root.")
_RATE = flags.DEFINE_integer("sample_rate", 32, "Store sampling rate (Hz).")
_STEPS = flags.DEFINE_integer("steps", 300, "Pretraining steps per contrastive mode.")
_MODES = flags.DEFINE_list("modes", ["leave_one_out", "pairwise"], "Contrastive losses.")
_SUBJECTS = flags.DEFINE_integer("subjects", 24, "Synthetic subjects (one night each).")
_HOURS = flags.DEFINE_float("hours", 2.0, "Hours per synthetic night.")
_FRACTIONS = flags.DEFINE_list("label_fractions", ["0.01", "0.1", "1.0"],
                               "Fractions of each fold's training labels.")
_CNN = flags.DEFINE_bool("cnn", True, "Train the end-to-end CNN baseline.")
_UNTRAINED = flags.DEFINE_bool(
    "untrained", True, "Also probe untrained encoders (same architecture, random weights): the "
    "control that shows what pretraining added.")
_CNN_EPOCHS = flags.DEFINE_float("cnn_epochs", None, "CNN epochs per fold (default: the "
                                  "supervised demo preset's).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of data, training and folds.")
_SLEEPEDF = flags.DEFINE_string(
    "sleepedf_dir", None, "Folder with SC4001E0-PSG.edf + hypnogram (default: ../shared/...).")

cli.define_compilation_cache_flag()

_REPO = pathlib.Path(__file__).resolve().parents[1]


def _store(root: pathlib.Path, dataset: str, rate: int, seed: int) -> str:
  from sleepfm_jax.configs import preprocess as preprocess_configs  # pylint: disable=C0415
  from sleepfm_jax.data import discovery, synthetic  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import format_summary, preprocess  # pylint: disable=import-outside-toplevel

  store = root / "store"
  if (store / "index.json").exists():
    return str(store)
  if dataset == "synthetic":
    data = root / "data"
    if not (data / "synthetic_manifest.json").exists():
      synthetic.write_dataset(data, n_subjects=_SUBJECTS.value, hours=_HOURS.value, seed=seed)
    inputs, preset = [str(data)], "synthetic"
  else:
    src = pathlib.Path(_SLEEPEDF.value or _REPO.parent / "shared" / "data" / "psg-real" /
                       "sleep-edfx" / "sleep-cassette")
    if not (src / "SC4001E0-PSG.edf").exists():
      raise app.UsageError(f"SC4001E0-PSG.edf not found in {src}; pass --sleepedf_dir")
    inputs, preset = [str(src)], "sleepedf"
  config = preprocess_configs.get_config(preset).to_dict()
  config["sample_rate"] = rate
  specs, unpaired = discovery.discover(inputs)
  print(format_summary(preprocess(specs, store, config, unpaired=unpaired)))
  return str(store)


def _pretrain(store: str, run_dir: pathlib.Path, dataset: str, mode: str):
  from sleepfm_jax.configs import pretrain as pretrain_configs  # pylint: disable=C0415
  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  config = pretrain_configs.get_config("demo" if dataset == "synthetic" else "sleepedf")
  config.data.store = store
  config.loss.mode = mode
  config.total_steps = _STEPS.value
  config.seed = _SEED.value
  summary_path = run_dir / "summary.json"
  if summary_path.exists():
    return json.loads(summary_path.read_text())
  return train.train(config, str(run_dir), resume=(run_dir / "checkpoints").exists())


def main(argv):
  del argv
  cli.start()
  from sleepfm_jax.configs import supervised as supervised_configs  # pylint: disable=C0415
  from sleepfm_jax import export  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import runs, supervised  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.store import WindowStore  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.evaluation import baselines, probes, report, suite  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.evaluation import embeddings as emb_format  # pylint: disable=import-outside-toplevel

  dataset = _DATASET.value
  root = pathlib.Path(_WORKDIR.value) / dataset
  root.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  timings = {}
  store_path = _store(root, dataset, _RATE.value, _SEED.value)
  store = WindowStore(store_path)
  timings["preprocess_s"] = round(time.time() - t0, 1)

  summaries, embeddings = {}, {}
  for mode in _MODES.value:
    t = time.time()
    summaries[mode] = _pretrain(store_path, root / f"pretrain_{mode}", dataset, mode)
    timings[f"pretrain_{mode}_s"] = round(time.time() - t, 1)
  first = root / f"pretrain_{_MODES.value[0]}"
  split = runs.run_splits(str(first), store=store_path)
  channels = split["channels"]
  if dataset == "synthetic":
    recordings = runs.held_out_recordings(split)
  else:  # one night: pretraining saw (unlabelled) windows of it; probes use time-blocked folds
    recordings = list(store.recording_ids)
  for mode in _MODES.value:
    out = root / f"embeddings_{mode}"
    if not (out / "index.json").exists():
      export.export_store(str(root / f"pretrain_{mode}"), store, str(out), recordings=recordings)
    embeddings[mode] = emb_format.load_embeddings(out)
  if _UNTRAINED.value:
    out = root / "embeddings_untrained"
    if not (out / "index.json").exists():
      export.export_store(export.untrained_embedder(str(first), seed=_SEED.value), store,
                          str(out), recordings=recordings)
    embeddings["untrained"] = emb_format.load_embeddings(out)

  tasks = ("staging", "sdb") if dataset == "synthetic" else ("staging",)
  fractions = suite.fractions(_FRACTIONS.value)
  probe_cfg = probes.ProbeConfig(seed=_SEED.value)
  t = time.time()
  spectral = baselines.spectral_baseline(store, tasks, recordings=recordings, channels=channels,
                                         config=probe_cfg, label_fractions=fractions,
                                         progress=False)
  timings["spectral_s"] = round(time.time() - t, 1)
  predictions = {}
  for (task, f), p in spectral.items():
    if not isinstance(p, probes.Skipped):
      predictions[f"spectral@{f:g}/{task}"] = p
  if _CNN.value:
    t = time.time()
    cnn_config = supervised_configs.get_config("demo")
    if _CNN_EPOCHS.value is not None:
      cnn_config.num_epochs = _CNN_EPOCHS.value
    cnn_config.seed = _SEED.value
    cnn = supervised.run(store_path, cnn_config, tasks, recordings=recordings, channels=channels,
                         probe_config=probe_cfg, label_fractions=fractions,
                         out_dir=root / "cnn", progress=False)
    timings["cnn_s"] = round(time.time() - t, 1)
    for (task, f), p in cnn.items():
      if not isinstance(p, probes.Skipped):
        predictions[f"cnn@{f:g}/{task}"] = p

  t = time.time()
  cfg = suite.SuiteConfig(tasks=(*tasks, "retrieval"), label_fractions=fractions,
                          probe=probe_cfg, n_boot=1000, retrieval_candidates=None)
  result = suite.run_suite(embeddings, predictions, config=cfg, progress=False)
  timings["probes_s"] = round(time.time() - t, 1)
  paths = report.write_report(root / "report", result,
                              metrics_jsonl=str(first / "metrics.jsonl"),
                              title=f"SleepFM-JAX paper experiments: {dataset}"
                              + (" (SYNTHETIC data)" if dataset == "synthetic" else ""))

  table = []
  for e in result.entries:
    m = e.metrics
    ci = m.get("ci", {}).get("auroc_macro")
    table.append({"source": e.source.split("@")[0], "task": e.task, "feature": e.feature,
                  "label_fraction": e.label_fraction, "n": m["n"],
                  "auroc_macro": round(m["auroc_macro"], 4),
                  "auroc_ci": None if ci is None else [round(ci["lo"], 4), round(ci["hi"], 4)],
                  "auprc_macro": round(m["auprc_macro"], 4), "kappa": round(m["kappa"], 4),
                  "f1_macro": round(m["f1_macro"], 4)})
  out = {"dataset": dataset, "synthetic": dataset == "synthetic", "sample_rate": _RATE.value,
         "pretrain_steps": _STEPS.value, "modes": _MODES.value, "recordings": recordings,
         "subjects": len(set(store.subject_ids)), "channels": channels, "timings": timings,
         "pretrain": {k: {"train_loss": v.get("train", {}).get("loss"),
                          "val_loss": v.get("val", {}).get("loss")} for k, v in summaries.items()},
         "retrieval": result.retrieval, "table": table, "report": str(paths["markdown"]),
         "wall_s": round(time.time() - t0, 1)}
  (root / "results.json").write_text(json.dumps(out, indent=2, default=float) + "\n")
  for row in table:
    print(f"{row['source']:>14s} {row['task']:8s} {row['feature']:9s} @{row['label_fraction']:<5g}"
          f" AUROC {row['auroc_macro']:.3f} AUPRC {row['auprc_macro']:.3f} "
          f"kappa {row['kappa']:.3f}")
  print(f"{root / 'results.json'}; report {paths['markdown']}")


if __name__ == "__main__":
  cli.run(main)
