r"""The main job end to end on the bundled default data (README, first command).

  python experiments/demo.py --workdir=runs/demo

1. Data: SYNTHETIC three-modality nights from the project's generator (clearly labelled synthetic;
   BAS + ECG + respiratory with apneas), and the real Sleep-EDF SC4001 night from
   ../shared/data/psg-real when present.
2. Preprocess both into window stores (per-file report; the SC4001 summary shows the real-data
   path: 2650 windows, W 1997 / N1 58 / N2 250 / N3 220 / REM 125).
3. Pretrain the three EffNet-1D encoders with the leave-one-out contrastive loss on the synthetic
   pretraining subjects (`experiments/configs/pretrain.py:demo`).
4. Export embeddings of the held-out downstream subjects (never seen in pretraining).
5. Probe them (logistic regression, subject-wise folds) for 5-class staging and SDB, measure
   cross-modal retrieval, and write a report (markdown + JSON + PNG).

Everything lands under --workdir; re-running reuses finished steps (delete the folder to start over).
Defaults take an estimated 20-30 minutes on 2 CPU cores; --quick runs a much smaller version.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import app, flags, logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments.configs

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where everything is written.")
_SUBJECTS = flags.DEFINE_integer("subjects", 16, "Synthetic subjects (one night each).")
_HOURS = flags.DEFINE_float("hours", 2.0, "Hours per synthetic night.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and of training.")
_RATE = flags.DEFINE_integer("sample_rate", 64, "Store sampling rate in Hz (the paper uses 256; "
                             "64 keeps the demo to minutes on a CPU).")
_STEPS = flags.DEFINE_integer("steps", 0, "Pretraining steps (0: the demo preset's).")
_SLEEPEDF = flags.DEFINE_string(
    "sleepedf_dir", None, "Folder with SC4001E0-PSG.edf + hypnogram (default: the shared real data "
    "beside the repository; skipped with a note when absent).")
_QUICK = flags.DEFINE_bool("quick", False, "A small, fast version (tests use it).")


def _repo() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parents[1]


def _banner(text: str):
  print(f"\n=== {text} ===", flush=True)


def make_data(root: pathlib.Path, subjects: int, hours: float, seed: int) -> pathlib.Path:
  from sleepfm_jax.data import synthetic  # pylint: disable=import-outside-toplevel

  out = root / "data" / "synthetic"
  manifest = out / "synthetic_manifest.json"
  if manifest.exists():
    print(f"reusing SYNTHETIC data in {out}")
    return out
  synthetic.write_dataset(out, n_subjects=subjects, hours=hours, seed=seed)
  print(f"wrote {subjects} SYNTHETIC nights x {hours:g} h to {out} (see docs/synthetic.md)")
  return out


def make_store(inputs: list[str], store: pathlib.Path, preset: str, sample_rate: int) -> str:
  from experiments.configs import preprocess as preprocess_configs  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data import discovery  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import format_summary, preprocess  # pylint: disable=import-outside-toplevel

  if (store / "index.json").exists():
    print(f"reusing store {store}")
    report = json.loads((store / "report.json").read_text())
  else:
    config = preprocess_configs.get_config(preset).to_dict()
    config["sample_rate"] = sample_rate
    specs, unpaired = discovery.discover(inputs)
    report = preprocess(specs, store, config, unpaired=unpaired)
  print(format_summary(report))
  return str(store)


def pretrain(store: str, workdir: pathlib.Path, steps: int, seed: int, quick: bool):
  from experiments.configs import pretrain as pretrain_configs  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  config = pretrain_configs.get_config("demo")
  config.data.store = store
  config.seed = seed
  if steps:
    config.total_steps = steps
  if quick:
    config.model.widths = (8,) * 8
    config.model.depths = (1,) * 7
    config.model.head_width = 64
    config.model.embed_dim = 32
    config.total_steps = steps or 20
    config.eval_every = config.checkpoint_every = config.total_steps
  resume = (workdir / "checkpoints").exists()
  summary = train.train(config, str(workdir), resume=resume)
  return config, summary


def main(argv):
  del argv
  from sleepfm_jax.training import hostmem  # pylint: disable=import-outside-toplevel
  hostmem.retain_freed_memory()  # before JAX starts its CPU client (see hostmem.py)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import numpy as np  # pylint: disable=import-outside-toplevel

  root = pathlib.Path(_WORKDIR.value)
  root.mkdir(parents=True, exist_ok=True)
  quick = _QUICK.value
  subjects = 8 if quick and not flags.FLAGS["subjects"].present else _SUBJECTS.value
  hours = 0.75 if quick and not flags.FLAGS["hours"].present else _HOURS.value
  rate = 32 if quick and not flags.FLAGS["sample_rate"].present else _RATE.value

  _banner("1/5 data")
  synth_dir = make_data(root, subjects, hours, _SEED.value)
  sleepedf = pathlib.Path(_SLEEPEDF.value or _repo().parent / "shared" / "data" / "psg-real" /
                          "sleep-edfx" / "sleep-cassette")
  has_sleepedf = (sleepedf / "SC4001E0-PSG.edf").exists()

  _banner("2/5 preprocess")
  print("-- SYNTHETIC nights --")
  synth_store = make_store([str(synth_dir)], root / "stores" / "synthetic", "synthetic", rate)
  if has_sleepedf:
    print("-- real Sleep-EDF SC4001 --")
    make_store([str(sleepedf)], root / "stores" / "sleepedf", "sleepedf", rate)
  else:
    print(f"Sleep-EDF SC4001 not found at {sleepedf}: skipped (pass --sleepedf_dir)")

  _banner("3/5 pretrain (leave-one-out, SYNTHETIC data)")
  run_dir = root / "pretrain_loo"
  config, summary = pretrain(synth_store, run_dir, _STEPS.value, _SEED.value, quick)
  print(f"final train loss {summary['train']['loss']:.4f}"
        + (f", val loss {summary['val']['loss']:.4f}" if "val" in summary else ""))

  _banner("4/5 export embeddings of the held-out downstream subjects")
  from sleepfm_jax import export  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import runs  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.store import WindowStore  # pylint: disable=import-outside-toplevel

  store = WindowStore(synth_store)
  plan = runs.plan_data(store, config)
  downstream = sorted({store.recording_ids[int(r)] for r in store.recording_of(plan.downstream)})
  emb_dir = root / "embeddings_loo"
  index = export.export_store(str(run_dir), store, str(emb_dir), recordings=downstream)
  print(f"{len(downstream)} downstream recordings -> {index}")

  _banner("5/5 probes, retrieval, report")
  from sleepfm_jax.evaluation import embeddings as emb_format  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.evaluation import probes, report, suite  # pylint: disable=import-outside-toplevel

  es = emb_format.load_embeddings(emb_dir)
  n_subjects = len(np.unique(es.subject_id))
  cfg = suite.SuiteConfig(
      tasks=("staging", "sdb", "retrieval"), features=("bas", "ecg", "resp", "concat"),
      probe=probes.ProbeConfig(outer_folds=min(5, n_subjects), inner_folds=2 if quick else 3,
                               c_grid=(0.01, 0.1, 1.0) if quick else (0.001, 0.01, 0.1, 1.0, 10.0)),
      n_boot=100 if quick else 1000, retrieval_candidates=None)
  result = suite.run_suite({"loo": es}, config=cfg, progress=False)
  paths = report.write_report(root / "report", result,
                              metrics_jsonl=str(run_dir / "metrics.jsonl"),
                              tsne_points=500 if quick else 2000)
  print("\nSYNTHETIC data: these numbers show the pipeline works; they are not clinical results.")
  for task in ("staging", "sdb"):
    entry = result.headline("loo", task)
    if entry is not None:
      m = entry.metrics
      print(f"  {task:8s} ({entry.feature}, {m['n']} windows, {n_subjects} held-out subjects): "
            f"macro AUROC {m['auroc_macro']:.3f}, kappa {m['kappa']:.3f}")
  print(f"report: {paths['markdown']}")


if __name__ == "__main__":
  app.run(main)
