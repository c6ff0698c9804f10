"""The multi-seed experiments of docs/results.md: does contrastive pretraining learn?

Each experiment repeats every trained model over seeds and writes one JSON of per-seed rows
(`docs/results/<name>.json`), from which `evaluation.results_doc` renders the tables:

* `synthetic` (SYNTHETIC data, `data/synthetic`): nights whose modalities share one latent
  physiology, split by subject. Pretraining (leave-one-out and pairwise) sees the pretraining
  subjects only; everything is scored on the held-out subjects, never seen in pretraining:
  cross-modal retrieval among `retrieval_candidates` windows, and staging / SDB with 1, 2, 4, 8 and
  all labelled subjects per outer fold (`ProbeConfig.label_subjects`), for the probes on
  pretrained and on untrained encoders (same architecture, random weights), the spectral-feature
  probe and the end-to-end CNN (the pretraining encoders plus a linear head, early stopping). A
  leave-one-out run on nights rendered with `coupling="none"` is the retrieval control.
* `sleepedf` (real Sleep-EDF SC4001, cropped to the sleep period +- 30 min): one night, split in
  time blocks. Pretraining sees half of the blocks; the probes, the CNN, the spectral features and
  the wake-oracle reference are scored on the other half (inductive). A transductive variant
  (the same encoders probed on every window of the night, pretraining windows included) is
  reported separately and labelled so.

Every unit of work (a pretraining run, an export, a probe set, a CNN set) is cached under the
work directory, so an interrupted or extended run (more seeds) only computes what is missing.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import pathlib
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sleepfm_jax.data.channels import MODALITIES
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import baselines, probes, references, retrieval
from sleepfm_jax.evaluation import embeddings as emb_format
from sleepfm_jax.evaluation.metrics import classification_metrics

HEADLINE = {"staging": "concat", "sdb": "concat"}  # the features the paired differences compare
TASK_FEATURES = {"staging": ("concat", "bas"), "sdb": ("concat", "resp")}


@dataclasses.dataclass
class Settings:
  """What an evidence run does (defaults: the `synthetic` experiment of docs/results.md)."""

  dataset: str = "synthetic"  # "synthetic" or "sleepedf"
  workdir: str = "runs/evidence"
  seeds: tuple[int, ...] = (0, 1, 2)
  sample_rate: int = 32
  subjects: int = 100  # synthetic
  hours: float = 2.0  # synthetic, per night
  steps: int = 600  # pretraining steps per run
  modes: tuple[str, ...] = ("leave_one_out", "pairwise")
  uncoupled_control: bool = True  # synthetic: LOO on coupling="none" nights (retrieval control)
  # synthetic: scales the stage's effect on heart rate, breathing rate and depth (1 = the
  # literature-sized default; larger = a positive control, `synthetic.generate_night`)
  stage_gain: float = 1.0
  label_subjects: tuple[int, ...] = (1, 2, 4, 8, 0)  # synthetic; 0 = every training subject
  label_fractions: tuple[float, ...] = (0.1, 1.0)  # sleepedf
  outer_folds: int = 3
  retrieval_candidates: int = 1000
  cnn: bool = True
  cnn_epochs: float = 2.0  # the CNN's cap: max(min_steps, epochs x windows / batch) per fold
  # The CNN's label budgets, when fewer than the probes' (it trains once per budget, fold and
  # task: the costliest unit on a CPU); empty = the same as the probes'.
  cnn_label_subjects: tuple[int, ...] = ()  # synthetic
  cnn_label_fractions: tuple[float, ...] = ()  # sleepedf
  spectral: bool = True
  # Also the spectral features of some modalities only, one probe source each ("spectral_<entry>"),
  # e.g. ("bas", "ecg+resp"): which modality carries each task's information.
  spectral_modalities: tuple[str, ...] = ()
  sleepedf_dir: str = ""
  pretrain_fraction: float = 0.5  # sleepedf: share of the night's time blocks pretraining sees
  quick: bool = False  # tiny encoders (the `quick` preset option): smoke tests, not results
  dtype: str = "float32"  # pretraining compute dtype (float32 or bfloat16): the bf16 comparison
  export_dtype: str = ""  # the embedding export's compute dtype; "" = the pretraining dtype
  width: float = 1.0  # scales the encoders' channel widths and head (e.g. 0.5: a cheaper model)
  # Pretraining config overrides, "key=value" (e.g. "optim.lr=0.001", "loss.temperature_init=2.0"):
  # a learning-rate or temperature sweep, each setting in a workdir of its own.
  pretrain_overrides: tuple[str, ...] = ()
  # What the probes read: "embedding" (the contrastive embeddings, the original's probe input) or
  # "pooled" (each encoder's pooled features before its final linear layer, for the pretrained
  # and the untrained encoders alike). Retrieval needs the aligned embeddings: none with "pooled".
  features: str = "embedding"
  # synthetic: > 0 also scores the untrained encoders with their BatchNorm running statistics
  # estimated on this many batches (of the pretraining batch size) of pretraining windows
  # ("untrained_cal", `export.calibrate_untrained`), beside the initial statistics ("untrained").
  calibrated_control: int = 0
  # synthetic: the store's input normalisation ("robust": per channel and recording, the
  # default; "none": physical units, the original's convention, stored in float32)
  normalise: str = "robust"
  progress: bool = True

  @property
  def forward_dtype(self) -> str:
    """The export's compute dtype: `export_dtype`, or the pretraining dtype when it is empty."""
    return self.export_dtype or self.dtype

  @property
  def preset(self) -> str:
    return "demo" if self.dataset == "synthetic" else "sleepedf"


def _json(path: pathlib.Path, compute: Callable[[], Any]) -> Any:
  """Cached unit of work: the JSON at `path`, computed (and written) when absent."""
  if path.exists():
    return json.loads(path.read_text())
  value = compute()
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value, indent=1, default=float) + "\n")
  return value


def _rows_of(value: Any) -> list[dict]:
  return value["rows"] if isinstance(value, dict) else value


def _json_by_budget(path: pathlib.Path, budget_list: Sequence["Budget"],
                    compute: Callable[[list["Budget"]], Any]) -> Any:
  """Cached per-budget work: rows (or {"rows": [...], "budget": [...]}) whose "labels" name a
  budget. Budgets missing from the cache (e.g. a rerun with more `--label_subjects`) are computed
  and added; the result holds the requested budgets only, never a stale file's other ones."""
  cached = json.loads(path.read_text()) if path.exists() else None
  have = {r["labels"] for r in _rows_of(cached)} if cached is not None else set()
  missing = [b for b in budget_list if b.name not in have]
  if cached is None or missing:
    new = compute(missing)
    if cached is None:
      cached = new
    elif isinstance(cached, dict):
      cached = {k: cached[k] + new[k] for k in cached}
    else:
      cached = cached + new
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached, indent=1, default=float) + "\n")
  names = {b.name for b in budget_list}
  if isinstance(cached, dict):
    return {k: [r for r in v if r["labels"] in names] for k, v in cached.items()}
  return [r for r in cached if r["labels"] in names]


def _metric_row(y_true, y_prob, classes, **keys) -> dict[str, Any]:
  m = classification_metrics(y_true, y_prob, classes)
  return {**keys, "n": int(len(y_true)), "auroc": float(m["auroc_macro"]),
          "auprc": float(m["auprc_macro"]), "kappa": float(m["kappa"]),
          "f1": float(m["f1_macro"])}


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def synthetic_store(root: pathlib.Path, s: Settings, coupling: str) -> str:
  """The SYNTHETIC nights (data-set seed 0) preprocessed into a store at `s.sample_rate`."""
  from sleepfm_jax.configs import preprocess as presets  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data import discovery, synthetic  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import preprocess  # pylint: disable=import-outside-toplevel

  name = coupling + ("" if s.stage_gain == 1.0 else f"_stage{s.stage_gain:g}")
  norm = "" if s.normalise == "robust" else f"_norm-{s.normalise}"
  data, store = root / f"data_{name}", root / f"store_{name}{norm}"
  if not (store / "index.json").exists():
    if not (data / "synthetic_manifest.json").exists():
      hi = max(64, s.sample_rate)
      synthetic.write_dataset(data, s.subjects, hours=s.hours, seed=0, coupling=coupling,
                              stage_gain=s.stage_gain,
                              rates=f"eeg={hi},eog={hi},emg={hi},ecg={hi},resp=32,spo2=1",
                              workers=2, progress=s.progress)
    cfg = presets.get_config("synthetic").to_dict()
    cfg.update(sample_rate=s.sample_rate, workers=2, normalise=s.normalise)
    if s.normalise == "none":
      cfg["dtype"] = "float32"  # float16 is for normalised signals (`PreprocessConfig.dtype`)
    specs, unpaired = discovery.discover([str(data)])
    preprocess(specs, store, cfg, unpaired=unpaired, progress=s.progress)
  return str(store)


def sleepedf_store(root: pathlib.Path, s: Settings) -> str:
  """SC4001 cropped to the sleep period +- 30 min (the `sleepedf` preset) at `s.sample_rate`."""
  from sleepfm_jax.configs import preprocess as presets  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data import discovery  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import preprocess  # pylint: disable=import-outside-toplevel

  store = root / "store"
  if not (store / "index.json").exists():
    src = pathlib.Path(s.sleepedf_dir)
    if not (src / "SC4001E0-PSG.edf").exists():
      raise FileNotFoundError(f"SC4001E0-PSG.edf not found in {src}")
    cfg = presets.get_config("sleepedf").to_dict()
    cfg["sample_rate"] = s.sample_rate
    specs, unpaired = discovery.discover([str(src)])
    specs = [sp for sp in specs if sp.recording_id.startswith("SC4001")]
    preprocess(specs, store, cfg, unpaired=unpaired, progress=s.progress)
  return str(store)


# ----------------------------------------------------------------------------------------------
# Models: pretraining, export, the CNN
# ----------------------------------------------------------------------------------------------


def apply_overrides(config, overrides: Sequence[str]) -> None:
  """Sets each "dotted.key=value" of `overrides` on `config` (values as Python literals, else
  strings); an unknown key or a value of the wrong type is an error naming the override."""
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"pretrain override {item!r}: expected key=value")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *path, last = key.strip().split(".")
    node = config
    try:
      for name in path:
        node = node[name]
      if last not in node:
        raise KeyError(last)
      node[last] = value
    except (KeyError, TypeError) as e:
      raise ValueError(f"pretrain override {item!r}: {type(e).__name__}: {e}") from e


def pretrain_config(s: Settings, store: str, mode: str, seed: int):
  from sleepfm_jax.configs import pretrain  # pylint: disable=import-outside-toplevel

  config = pretrain.get_config(f"{s.preset},steps={s.steps}" + (",quick" if s.quick else ""))
  config.model.dtype = s.dtype
  if s.width != 1.0:
    config.model.widths = tuple(max(4, round(w * s.width)) for w in config.model.widths)
    config.model.head_width = max(4, round(config.model.head_width * s.width))
  apply_overrides(config, s.pretrain_overrides)
  config.data.store = store
  config.loss.mode = mode
  config.seed = seed
  config.data.split_seed = 0  # the same held-out subjects / time blocks for every seed
  if s.dataset == "sleepedf":
    config.data.pretrain_fraction = s.pretrain_fraction
  return config


def pretrain(run: pathlib.Path, config) -> dict[str, Any]:
  """Trains (or reuses) a pretraining run; returns its budget (steps, wall seconds, losses)."""
  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  def compute():
    t0 = time.time()
    summary = train.train(config, str(run), resume=(run / "checkpoints").exists())
    return {"steps": int(summary["final_step"]), "wall_s": time.time() - t0,
            "train_loss": summary.get("train", {}).get("loss"),
            "val_loss": summary.get("val", {}).get("loss"),
            "val_top1": summary.get("val", {}).get("top1")}

  return _json(run / "budget.json", compute)


def embeddings(checkpoint, store: str, out: pathlib.Path, recordings: Sequence[str],
               dtype: str = "", features: str = "embedding") -> emb_format.EmbeddingSet:
  """Exports (or reuses) the embeddings of `recordings`; `checkpoint` is a run, an Embedder or a
  function that builds one (called only when the export is not cached), `dtype` the forward
  pass's compute dtype for a run ("" = the exporter's default, float32), `features` what a run's
  encoders output (`export.load_embedder`)."""
  from sleepfm_jax import export  # pylint: disable=import-outside-toplevel

  if callable(checkpoint):
    if (out / "index.json").exists():
      return _check_features(emb_format.load_embeddings(out), out, features)
    checkpoint = checkpoint()
  if isinstance(checkpoint, export.Embedder):
    features = checkpoint.features
  if not (out / "index.json").exists():
    if not isinstance(checkpoint, export.Embedder):
      checkpoint = export.load_embedder(str(checkpoint), dtype=dtype or None, features=features)
    export.export_store(checkpoint, store, str(out), recordings=list(recordings), progress=False)
  return _check_features(emb_format.load_embeddings(out), out, features)


def _check_features(es: emb_format.EmbeddingSet, out: pathlib.Path,
                    features: str) -> emb_format.EmbeddingSet:
  # a cached export of the other features would feed every probe of this workdir silently
  cached = es.metadata.get("features", "embedding")  # exports before the option: embeddings
  if cached != features:
    raise ValueError(f"{out} holds '{cached}' features, this run asks for '{features}': give it "
                     "a --workdir of its own")
  return es


def untrained(run: pathlib.Path, seed: int, dtype: str = "", features: str = "embedding"):
  from sleepfm_jax import export  # pylint: disable=import-outside-toplevel

  return export.untrained_embedder(str(run), seed=seed, dtype=dtype or None, features=features)


def calibrated(run: pathlib.Path, store: str, seed: int, s: Settings):
  """The untrained encoders of `untrained`, with BN statistics estimated on `s.calibrated_control`
  batches (of the run's batch size) of the run's pretraining windows (drawn with `seed`)."""
  from sleepfm_jax import export  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import runs as runs_lib  # pylint: disable=import-outside-toplevel

  windows = runs_lib.part_windows(runs_lib.run_splits(str(run)), WindowStore(store), "pretrain")
  return export.calibrate_untrained(untrained(run, seed, s.forward_dtype, s.features), store,
                                    windows, batches=s.calibrated_control, seed=seed)


def _retrieval(path: pathlib.Path, s: Settings, compute: Callable[[], list[dict]]) -> list[dict]:
  """Cached retrieval rows; none for "pooled" features (not aligned across modalities)."""
  return _json(path, compute) if s.features == "embedding" else []


def cnn_config(s: Settings, seed: int):
  from sleepfm_jax.configs import supervised  # pylint: disable=import-outside-toplevel

  config = supervised.get_config(f"demo,model_from={s.preset}" + ("+quick" if s.quick else ""))
  config.seed = seed
  config.num_epochs = s.cnn_epochs
  if s.dataset == "sleepedf":
    config.data.modalities = ("bas", "resp")
  return config


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------


def retrieval_rows(es: emb_format.EmbeddingSet, source: str, seed: int, n: int) -> list[dict]:
  rows = []
  for direction, r in retrieval.cross_modal_retrieval(es, n_candidates=n, seed=seed).items():
    if "skipped" in r:
      continue
    rows.append({"source": source, "seed": seed, "direction": direction,
                 "n_candidates": int(r["n_candidates"]), "n_queries": int(r["n_queries"]),
                 "recall@1": float(r["recall@1"]), "recall@10": float(r["recall@10"]),
                 "chance@10": float(r["chance@10"]), "median_rank": float(r["median_rank"])})
  return rows


@dataclasses.dataclass(frozen=True)
class Budget:
  """How many labels each outer training fold keeps: whole subjects or a fraction of windows."""

  name: str
  subjects: int = 0
  fraction: float = 1.0

  def probe_config(self, s: Settings, seed: int) -> probes.ProbeConfig:
    return probes.ProbeConfig(outer_folds=s.outer_folds, seed=seed, label_subjects=self.subjects)


def budgets(s: Settings, train_subjects: int | None = None) -> list[Budget]:
  if s.dataset == "sleepedf":
    return [Budget(f"{f * 100:g} %", fraction=f) for f in s.label_fractions]
  out = []
  for k in s.label_subjects:
    if k == 0:
      out.append(Budget("all" if train_subjects is None else f"all ({train_subjects})"))
    else:
      out.append(Budget(f"{k} subject" + ("s" if k > 1 else ""), subjects=k))
  return out


def cnn_budgets(s: Settings, budget_list: Sequence[Budget]) -> list[Budget]:
  """The probes' label budgets that the CNN is also trained on (`cnn_label_subjects`,
  `cnn_label_fractions`; all of them when those are empty)."""
  if s.dataset == "sleepedf":
    keep = s.cnn_label_fractions
    return [b for b in budget_list if not keep or b.fraction in keep]
  keep = s.cnn_label_subjects
  return [b for b in budget_list if not keep or b.subjects in keep]


def probe_rows(es: emb_format.EmbeddingSet, source: str, seed: int, s: Settings,
               tasks: Sequence[str], budget_list: Sequence[Budget]) -> list[dict]:
  rows = []
  for task in tasks:
    for feature in TASK_FEATURES[task]:
      for b in budget_list:
        res = probes.probe_embeddings(es, task, feature, b.probe_config(s, seed), b.fraction)
        if isinstance(res, probes.Skipped):
          continue
        rows.append(_metric_row(res.y_true, res.y_prob, res.classes, source=source,
                                feature=feature, task=task, labels=b.name, seed=seed))
  return rows


def spectral_rows(store: WindowStore, table: baselines.WindowTable, seed: int, s: Settings,
                  tasks: Sequence[str], budget_list: Sequence[Budget],
                  source: str = "spectral") -> list[dict]:
  x = baselines.store_features(store, table, progress=False)
  rows = []
  for task in tasks:
    if table.skip_reason(task):
      continue
    y, classes = table.labels(task)
    for b in budget_list:
      res = probes.run_probe(x, y, table.subject_id, classes, b.probe_config(s, seed), b.fraction,
                             task=task, feature="spectral")
      rows.append(_metric_row(res.y_true, res.y_prob, res.classes, source=source,
                              feature="spectral", task=task, labels=b.name, seed=seed))
  return rows


def cnn_rows(store: WindowStore, table: baselines.WindowTable, seed: int, s: Settings,
             task: str, budget_list: Sequence[Budget], log=print) -> dict[str, list[dict]]:
  from sleepfm_jax.training import supervised  # pylint: disable=import-outside-toplevel

  config = cnn_config(s, seed)
  y, classes = table.labels(task)
  trainer = supervised.Trainer(config, table.channels, table.channel_index, task, len(classes))
  rows, budget = [], []
  for b in budget_list:
    pred, runs = supervised.cross_validate(
        store, table, task, config, probe_config=b.probe_config(s, seed),
        label_fraction=b.fraction, trainer=trainer, progress=False, log=log)
    if isinstance(pred, probes.Skipped):
      continue
    rows.append(_metric_row(pred.y_true, pred.y_prob, pred.classes, source="cnn", feature="cnn",
                            task=task, labels=b.name, seed=seed))
    budget.append({"task": task, "labels": b.name, "seed": seed,
                   "steps": [r.steps for r in runs], "max_steps": [r.max_steps for r in runs],
                   "best_step": [r.best_step for r in runs], "wall_s": [r.seconds for r in runs]})
  return {"rows": rows, "budget": budget}


def oracle_rows(table: baselines.WindowTable, seed: int, budget_list: Sequence[Budget]
                ) -> list[dict]:
  """The wake-oracle reference on the staging windows (the same for every label budget)."""
  y, classes = table.labels("staging")
  keep = y >= 0
  prob = references.wake_oracle(y[keep], len(classes), seed=seed)
  return [_metric_row(y[keep], prob, classes, source="oracle", feature="oracle", task="staging",
                      labels=b.name, seed=seed) for b in budget_list]


# ----------------------------------------------------------------------------------------------
# The experiments
# ----------------------------------------------------------------------------------------------


def _hardware() -> dict[str, Any]:
  import os  # pylint: disable=import-outside-toplevel

  model = ""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
          "python": platform.python_version()}


def _finish(root: pathlib.Path, s: Settings, out: dict[str, Any]) -> dict[str, Any]:
  out.update(settings=dataclasses.asdict(s), hardware=_hardware(),
             date=time.strftime("%Y-%m-%d"), headline_feature=HEADLINE)
  (root / "results.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
  return out


def run_synthetic(s: Settings, log=print) -> dict[str, Any]:
  """The SYNTHETIC experiment (module docstring); returns the results dict (also written)."""
  from sleepfm_jax.training import runs as runs_lib  # pylint: disable=import-outside-toplevel

  root = pathlib.Path(s.workdir)
  stores = {"physiological": synthetic_store(root, s, "physiological")}
  if s.uncoupled_control:
    stores["none"] = synthetic_store(root, s, "none")
  out: dict[str, Any] = {"metrics": [], "retrieval": [], "budget": [], "synthetic": True}
  tasks = ("staging", "sdb")
  for seed in s.seeds:
    cache = root / f"seed_{seed}"
    sources = [(m, "physiological") for m in s.modes]
    if s.uncoupled_control:
      sources.append(("leave_one_out", "none"))
    held = None
    for mode, coupling in sources:
      name = {"leave_one_out": "loo", "pairwise": "pairwise"}[mode]
      name += "" if coupling == "physiological" else "_uncoupled"
      run = cache / f"pretrain_{name}"
      log(f"[seed {seed}] pretraining {name}")
      cost = pretrain(run, pretrain_config(s, stores[coupling], mode, seed))
      out["budget"].append({"source": name, "what": "pretraining", "seed": seed, **cost})
      recordings = runs_lib.held_out_recordings(runs_lib.run_splits(str(run)))
      es = embeddings(str(run), stores[coupling], cache / f"emb_{name}", recordings,
                      s.forward_dtype, s.features)
      out["retrieval"] += _retrieval(cache / f"retrieval_{name}.json", s, lambda es=es, name=name: (
          retrieval_rows(es, name, seed, s.retrieval_candidates)))
      if coupling == "none":
        continue
      if held is None:
        held = (run, recordings, es)
        blist = budgets(s, _train_subjects(es, s, seed))
        controls = {"untrained": lambda: untrained(run, seed, s.forward_dtype, s.features)}
        if s.calibrated_control:
          controls["untrained_cal"] = lambda: calibrated(run, stores[coupling], seed, s)
        for ctrl_name, embedder in controls.items():
          ctrl = embeddings(embedder, stores[coupling], cache / f"emb_{ctrl_name}", recordings,
                            features=s.features)
          out["retrieval"] += _retrieval(cache / f"retrieval_{ctrl_name}.json", s,
                                         lambda c=ctrl, n=ctrl_name: retrieval_rows(
                                             c, n, seed, s.retrieval_candidates))
          log(f"[seed {seed}] probes: {ctrl_name}")
          out["metrics"] += _json_by_budget(cache / f"probes_{ctrl_name}.json", blist,
                                            lambda bl, c=ctrl, n=ctrl_name: probe_rows(
                                                c, n, seed, s, tasks, bl))
      log(f"[seed {seed}] probes: {name}")
      out["metrics"] += _json_by_budget(cache / f"probes_{name}.json", blist,
                                        lambda bl, es=es, name=name: probe_rows(
                                            es, name, seed, s, tasks, bl))
    run, recordings, es = held
    out["metrics"] += _baselines(cache, stores["physiological"], recordings, None,
                                 runs_lib.run_splits(str(run))["channels"], seed, s, tasks, blist,
                                 out, log)
  return _finish(root, s, out)


def _train_subjects(es: emb_format.EmbeddingSet, s: Settings, seed: int) -> int:
  """Subjects in an outer training fold (the smallest), for the name of the 'all' budget."""
  y, _ = probes.task_labels(es, "staging")
  plan = probes.outer_folds(y, es.subject_id, probes.ProbeConfig(outer_folds=s.outer_folds,
                                                                 seed=seed))
  return int(min(len(np.unique(plan.subjects[tr])) for tr, _ in plan.folds))


def _baselines(cache: pathlib.Path, store_path: str, recordings, windows, channels, seed: int,
               s: Settings, tasks, blist, out: dict[str, Any], log) -> list[dict]:
  """Spectral-feature probes and the end-to-end CNN on the same windows, folds and labels."""
  store = WindowStore(store_path)
  table = baselines.select_windows(store, recordings, channels, windows=windows)
  rows = []
  if s.spectral:
    log(f"[seed {seed}] spectral features")
    rows += _json_by_budget(cache / "spectral.json", blist, lambda bl: spectral_rows(
        store, table, seed, s, tasks, bl))
  for entry in s.spectral_modalities:
    log(f"[seed {seed}] spectral features of {entry}")
    part = baselines.select_windows(store, recordings, channels, entry.split("+"), windows=windows)
    rows += _json_by_budget(cache / f"spectral_{entry}.json", blist,
                            lambda bl, part=part, entry=entry: spectral_rows(
                                store, part, seed, s, tasks, bl, source=f"spectral_{entry}"))
  if s.cnn:
    for task in tasks:
      log(f"[seed {seed}] end-to-end CNN, {task}")
      res = _json_by_budget(cache / f"cnn_{task}.json", cnn_budgets(s, blist),
                            lambda bl, task=task: cnn_rows(store, table, seed, s, task, bl,
                                                           log=log))
      rows += res["rows"]
      for b in res["budget"]:
        out["budget"].append({"source": "cnn", "what": f"CNN {b['task']} {b['labels']} "
                              f"(per fold)", "seed": seed, "steps": float(np.mean(b["steps"])),
                              "wall_s": float(np.mean(b["wall_s"]))})
  return rows


def run_sleepedf(s: Settings, log=print) -> dict[str, Any]:
  """The SC4001 experiment (module docstring); returns the results dict (also written)."""
  from sleepfm_jax.training import runs as runs_lib  # pylint: disable=import-outside-toplevel

  root = pathlib.Path(s.workdir)
  store_path = sleepedf_store(root, s)
  store = WindowStore(store_path)
  out: dict[str, Any] = {"metrics": [], "retrieval": [], "budget": [], "synthetic": False}
  blist = budgets(s)
  tasks = ("staging",)
  for seed in s.seeds:
    cache = root / f"seed_{seed}"
    run = cache / "pretrain_loo"
    log(f"[seed {seed}] pretraining loo")
    cost = pretrain(run, pretrain_config(s, store_path, "leave_one_out", seed))
    out["budget"].append({"source": "loo", "what": "pretraining", "seed": seed, **cost})
    split = runs_lib.run_splits(str(run))
    held = held_out_windows(split)
    recordings = list(store.recording_ids)
    full = embeddings(str(run), store_path, cache / "emb_loo", recordings,
                      s.forward_dtype, s.features)
    ctrl = embeddings(untrained(run, seed, s.forward_dtype, s.features), store_path,
                      cache / "emb_untrained", recordings)
    rows_of = store_rows(store, full.recording_id, full.epoch)
    inductive = np.isin(rows_of, held)
    for name, es in (("loo", full.subset(inductive)), ("untrained", ctrl.subset(inductive)),
                     ("loo_transductive", full)):
      log(f"[seed {seed}] probes: {name}")
      out["metrics"] += _json_by_budget(cache / f"probes_{name}.json", blist,
                                        lambda bl, es=es, name=name: probe_rows(
                                            es, name, seed, s, tasks, bl))
    out["retrieval"] += _retrieval(cache / "retrieval_loo.json", s, lambda: retrieval_rows(
        full.subset(inductive), "loo", seed, min(s.retrieval_candidates, int(inductive.sum()))))
    table = baselines.select_windows(store, recordings, split["channels"], windows=held)
    out["metrics"] += _json_by_budget(cache / "oracle.json", blist,
                                      lambda bl: oracle_rows(table, seed, bl))
    out["metrics"] += _baselines(cache, store_path, recordings, held, split["channels"], seed, s,
                                 tasks, blist, out, log)
  return _finish(root, s, out)


def held_out_windows(split: dict[str, Any]) -> np.ndarray:
  """Store windows of a time-split run's downstream part: never seen by pretraining (neither its
  training nor its validation windows), so every probe test fold drawn from them is inductive."""
  parts = split["parts"]
  held = np.asarray(parts["downstream"].get("windows", []), np.int64)
  if not held.size:
    raise ValueError("the run's downstream part lists no windows (not a time split?)")
  seen = np.concatenate([np.asarray(parts[p].get("windows", []), np.int64)
                         for p in ("pretrain", "val") if p in parts])
  if np.isin(held, seen).any():
    raise ValueError("downstream windows overlap the pretraining windows")
  return held


def store_rows(store: WindowStore, recording_id: np.ndarray, epoch: np.ndarray) -> np.ndarray:
  """The store window index of each (recording id, epoch) pair, e.g. the rows of an export."""
  index = {}
  for r in store.recordings:
    idx = store.indices_for_recording(r["recording_id"])
    epochs = store.get_batch(idx, modalities=())["epoch"]
    index.update({(r["recording_id"], int(e)): int(i) for e, i in zip(epochs, idx, strict=True)})
  return np.array([index[(str(r), int(e))] for r, e in zip(recording_id, epoch, strict=True)])


def run(s: Settings, log=print) -> dict[str, Any]:
  for entry in s.spectral_modalities:
    unknown = [m for m in entry.split("+") if m not in MODALITIES]
    if unknown or not entry:
      raise ValueError(f"spectral_modalities entry {entry!r}: expected modalities of "
                       f"{MODALITIES} joined by '+', e.g. 'ecg+resp'")
  if s.normalise not in ("robust", "none") or (s.normalise != "robust"
                                                 and s.dataset != "synthetic"):
    raise ValueError(f"normalise: 'robust' or 'none' (SYNTHETIC runs only), got {s.normalise!r}")
  if s.calibrated_control < 0 or (s.calibrated_control and s.dataset != "synthetic"):
    raise ValueError("calibrated_control: a number of batches >= 0, SYNTHETIC runs only")
  if s.dataset == "synthetic":
    return run_synthetic(s, log)
  if s.dataset == "sleepedf":
    return run_sleepedf(s, log)
  raise ValueError(f"dataset must be 'synthetic' or 'sleepedf', got {s.dataset!r}")
