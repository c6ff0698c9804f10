r"""The main job end to end on the bundled default data (README, first command).

  python experiments/demo.py --workdir=runs/demo

1. Data: SYNTHETIC three-modality nights from the project's generator (clearly labelled synthetic;
   BAS + ECG + respiratory with apneas), and the real Sleep-EDF SC4001 night from
   ../shared/data/psg-real when present.
2. Preprocess both into window stores (per-file report; the SC4001 summary shows the real-data
   path: cropped to the sleep period +- 30 min, 841 windows, W 188 / N1 58 / N2 250 / N3 220 /
   REM 125).
3. Pretrain the three EffNet-1D encoders with the leave-one-out contrastive loss on the synthetic
   pretraining subjects (the package's `configs/pretrain.py:demo`).
4. Export embeddings of the held-out downstream subjects (never seen in pretraining).
   Export them also through the same encoders with random weights: the untrained control.
5. Probe both (logistic regression, subject-wise folds) for 5-class staging and SDB, measure
   cross-modal retrieval against chance, and write a report (markdown + JSON + PNG) whose
   headline is pretrained vs untrained and retrieval vs chance (`report.json`, "headline").

Everything lands under --workdir; re-running reuses finished steps (delete the folder to start over).
The settings are the package's `configs/demo.py`: the default took 10 minutes on an idle 2-core
AMD EPYC (895 CPU-seconds); --quick selects its quick variant (about 2
minutes).
"""

from __future__ import annotations

import json
import pathlib

from absl import flags

from sleepfm_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where everything is written.")
_QUICK = flags.DEFINE_bool("quick", False, "configs/demo.py:quick, a small, fast version (tests "
                           "use it).")
_SUBJECTS = flags.DEFINE_integer("subjects", None, "Synthetic subjects, one night each (default: "
                                 "configs/demo.py's).")
_HOURS = flags.DEFINE_float("hours", None, "Hours per synthetic night (default: the config's).")
_SEED = flags.DEFINE_integer("seed", None, "Seed of the synthetic data and of training (default: "
                             "the config's).")
_RATE = flags.DEFINE_integer("sample_rate", None, "Store sampling rate in Hz (default: the "
                             "config's, 64; the paper uses 256).")
_STEPS = flags.DEFINE_integer("steps", None, "Pretraining steps (default: the pretrain preset's).")
_SLEEPEDF = flags.DEFINE_string(
    "sleepedf_dir", None, "Folder with SC4001E0-PSG.edf + hypnogram (default: the shared real data "
    "beside the repository; skipped with a note when absent).")
cli.define_compilation_cache_flag()


def settings():
  """configs/demo.py (its quick variant with --quick), with the flags given on top."""
  from sleepfm_jax.configs import demo  # pylint: disable=import-outside-toplevel

  c = demo.get_config("quick" if _QUICK.value else "")
  for name, flag in (("subjects", _SUBJECTS), ("hours", _HOURS), ("seed", _SEED),
                     ("sample_rate", _RATE), ("steps", _STEPS)):
    if flag.value is not None:
      c[name] = flag.value
  return c


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
  synthetic.write_dataset(out, n_subjects=subjects, hours=hours, seed=seed, workers=2)
  print(f"wrote {subjects} SYNTHETIC nights x {hours:g} h to {out} (see docs/synthetic.md)")
  return out


def make_store(inputs: list[str], store: pathlib.Path, preset: str, sample_rate: int) -> str:
  from sleepfm_jax.configs import preprocess as preprocess_configs  # pylint: disable=C0415
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


def pretrain(store: str, workdir: pathlib.Path, c):
  from sleepfm_jax.configs import pretrain as pretrain_configs  # pylint: disable=C0415
  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  config = pretrain_configs.get_config(c.pretrain + (f",steps={c.steps}" if c.steps else ""))
  config.data.store = store
  config.seed = c.seed
  resume = (workdir / "checkpoints").exists()
  summary = train.train(config, str(workdir), resume=resume)
  return config, summary


def export(store: str, run_dir: pathlib.Path, emb_dir: pathlib.Path, ctrl_dir: pathlib.Path,
           seed: int) -> None:
  """The held-out subjects through the pretrained encoders and through the same encoders with
  random weights (the control that shows what pretraining added)."""
  from sleepfm_jax import export as export_lib  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import runs  # pylint: disable=import-outside-toplevel

  downstream = runs.held_out_recordings(runs.run_splits(str(run_dir)))
  for out, model in ((emb_dir, str(run_dir)),
                     (ctrl_dir, export_lib.untrained_embedder(str(run_dir), seed=seed))):
    if not (out / "index.json").exists():
      export_lib.export_store(model, store, str(out), recordings=downstream)
  print(f"{len(downstream)} downstream recordings -> {emb_dir} (pretrained), {ctrl_dir} "
        "(untrained control)")


def evaluate(emb_dir: pathlib.Path, ctrl_dir: pathlib.Path, run_dir: pathlib.Path,
             out: pathlib.Path, c) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel

  from sleepfm_jax.evaluation import embeddings as emb_format  # pylint: disable=C0415
  from sleepfm_jax.evaluation import probes, report, suite  # pylint: disable=C0415

  es = emb_format.load_embeddings(emb_dir)
  n_subjects = len(np.unique(es.subject_id))
  cfg = suite.SuiteConfig(
      tasks=("staging", "sdb", "retrieval"), features=tuple(c.features),
      probe=probes.ProbeConfig(outer_folds=min(c.max_outer_folds, n_subjects),
                               inner_folds=c.inner_folds, c_grid=tuple(c.c_grid)),
      n_boot=c.n_boot, retrieval_candidates=None)
  result = suite.run_suite({"loo": es, "untrained": emb_format.load_embeddings(ctrl_dir)},
                           config=cfg, progress=False)
  paths = report.write_report(out, result, metrics_jsonl=str(run_dir / "metrics.jsonl"),
                              tsne_points=c.tsne_points, compare=("loo", "untrained"))
  h = result.compare("loo", "untrained")
  print("\nSYNTHETIC data: these numbers show the pipeline works; they are not clinical results.")
  print(f"Held-out subjects ({n_subjects}, never seen in pretraining), full labels, macro AUROC of "
        "the pretrained (LOO) encoders vs the same encoders untrained:")
  for task, t in h["tasks"].items():
    a, b = t["loo"], t["untrained"]
    if a is not None and b is not None:
      print(f"  {task:8s} ({a['feature']}, {a['n_windows']} windows): pretrained {a['auroc']:.3f} "
            f"(AUPRC {a['auprc']:.3f}) vs untrained {b['auroc']:.3f} (AUPRC {b['auprc']:.3f})")
  print("Cross-modal retrieval of held-out windows, recall@10 (untrained in brackets):")
  for d, r in h["retrieval"]["loo"].items():
    u = h["retrieval"]["untrained"].get(d, {})
    print(f"  {d:14s} {r['recall@10']:.3f} ({u.get('recall@10', float('nan')):.3f}) = "
          f"{r['x_chance']:.1f}x chance ({r['chance@10']:.4f}, {r['n_candidates']} candidates)")
  print(f"report: {paths['markdown']} (numbers in report.json, 'headline')")


def main(argv):
  del argv
  cli.start()
  c = settings()
  root = pathlib.Path(_WORKDIR.value)
  root.mkdir(parents=True, exist_ok=True)

  _banner("1/5 data")
  synth_dir = make_data(root, c.subjects, c.hours, c.seed)
  sleepedf = pathlib.Path(_SLEEPEDF.value or _repo().parent / "shared" / "data" / "psg-real" /
                          "sleep-edfx" / "sleep-cassette")
  has_sleepedf = (sleepedf / "SC4001E0-PSG.edf").exists()

  _banner("2/5 preprocess")
  print("-- SYNTHETIC nights --")
  synth_store = make_store([str(synth_dir)], root / "stores" / "synthetic", "synthetic",
                           c.sample_rate)
  if has_sleepedf:
    print("-- real Sleep-EDF SC4001 --")
    make_store([str(sleepedf)], root / "stores" / "sleepedf", "sleepedf", c.sample_rate)
  else:
    print(f"Sleep-EDF SC4001 not found at {sleepedf}: skipped (pass --sleepedf_dir)")

  _banner("3/5 pretrain (leave-one-out, SYNTHETIC data)")
  run_dir = root / "pretrain_loo"
  _, summary = pretrain(synth_store, run_dir, c)
  print(f"final train loss {summary['train']['loss']:.4f}"
        + (f", val loss {summary['val']['loss']:.4f}" if "val" in summary else ""))

  _banner("4/5 export embeddings of the held-out downstream subjects")
  emb_dir, ctrl_dir = root / "embeddings_loo", root / "embeddings_untrained"
  export(synth_store, run_dir, emb_dir, ctrl_dir, c.seed)

  _banner("5/5 probes, retrieval, report")
  evaluate(emb_dir, ctrl_dir, run_dir, root / "report", c)


if __name__ == "__main__":
  cli.run(main)
