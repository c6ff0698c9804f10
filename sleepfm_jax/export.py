"""Embedding export: a checkpoint + windows → per-recording embedding files (format v1).

Three ways in:

* `export_store(checkpoint, store, out_dir)` embeds every window of every recording of a window
  store (as written by `experiments/preprocess.py`).
* `embed(paths, checkpoint=...)` takes EDF/EDF+/WFDB files or folders (or a store), preprocesses
  them exactly like the checkpoint's training data (montage, rate, normalisation are recorded in the
  checkpoint), embeds them and returns an `EmbeddingSet` — three lines in a notebook::

    import sleepfm_jax
    es = sleepfm_jax.embed("my_psg_folder/", checkpoint="runs/demo/pretrain_loo")
    x, y = es.features("concat"), es.stage

* `experiments/export_embeddings.py`, the command line over the same functions.

Windows are embedded in eval mode (BatchNorm running statistics, no dropout) in fixed-size batches;
the last batch of a recording is padded and its padding rows dropped, so no window is lost and
nothing recompiles per recording. The batch is split over this process's devices. With several
processes (`jax.distributed`), each process embeds a disjoint set of whole recordings on its own
devices and writes their files; process 0 writes the index once all are done, so every window is
written exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from sleepfm_jax.data import pipeline
from sleepfm_jax.data import units as units_lib
from sleepfm_jax.data.selection import ChannelSelection, select_channels
from sleepfm_jax.data.store import WindowStore
from sleepfm_jax.evaluation import embeddings as emb_format
from sleepfm_jax.models.batch_stats import calibrate_batch_stats
from sleepfm_jax.models.sleepfm import SleepFM, check_features
from sleepfm_jax.training import checkpointing, sharding
from sleepfm_jax.training.factories import build_model


@dataclasses.dataclass
class Embedder:
  """A loaded encoder set, ready to embed batches of windows on this process's devices."""

  model: SleepFM
  meta: dict
  channels: dict[str, tuple[str, ...]]  # modality -> channel names the encoders expect
  batch_size: int
  mesh: jax.sharding.Mesh
  checkpoint: str
  features: str = "embedding"  # or "pooled": the encoders' features before their final layer

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.model.modalities)

  @functools.cached_property
  def _forward(self):
    graphdef, state = nnx.split(self.model)
    data = sharding.data_sharding(self.mesh)
    state = jax.device_put(state, sharding.replicated(self.mesh))

    @functools.partial(jax.jit, in_shardings=(None, data), out_shardings=data)
    def forward(state, batch):
      model = nnx.merge(graphdef, state)
      return model(batch, train=False, features=self.features)

    return functools.partial(forward, state)

  def lower(self, inputs: Mapping[str, jax.Array]) -> jax.stages.Lowered:
    """The jitted forward `embed_batch` runs, lowered for `inputs` ({modality: [batch, channels,
    samples]}), e.g. for XLA's cost analysis: `embedder.lower(x).compile().cost_analysis()`."""
    return self._forward.func.lower(*self._forward.args, inputs)

  def channel_index(self, store: WindowStore) -> dict[str, np.ndarray]:
    """Positions of the encoders' channels in `store`'s montage (clear error if one is missing)."""
    return select_channels(store.montage, self.channels, self.modalities, where=store.path,
                           who="the checkpoint's encoders",
                           hint="; preprocess with the checkpoint's montage").index

  def _inputs(self, batch: Mapping[str, np.ndarray], index: Mapping[str, np.ndarray]):
    """(the encoders' inputs on this process's mesh, the selection) of a store batch."""
    picked = ChannelSelection(self.channels, {m: index[m] for m in self.modalities}).select(batch)
    inputs = {m: picked[m] for m in self.modalities}
    # An explicit upload onto this process's mesh (jit refuses numpy inputs with a non-trivial
    # sharding once jax.distributed is initialised, even for a process-local mesh).
    return jax.device_put(inputs, sharding.data_sharding(self.mesh)), picked

  def embed_batch(self, batch: Mapping[str, np.ndarray],
                  index: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """Embeds one padded batch (from `pipeline.eval_batches`); returns (emb, present) per modality
    for the valid rows only."""
    valid = np.asarray(batch["valid"], bool)
    inputs, picked = self._inputs(batch, index)
    present = {m: picked[f"present_{m}"][valid] for m in self.modalities}
    out = jax.device_get(self._forward(inputs))
    return {m: np.asarray(out[m], np.float32)[valid] for m in self.modalities}, present


def load_embedder(checkpoint: str, *, batch_size: int = 64,
                  devices: Sequence[jax.Device] | None = None,
                  dtype: str | None = None, features: str = "embedding") -> Embedder:
  """Loads a checkpoint (a training work directory, `best/`, `checkpoints/` or a step directory).

  Args:
    checkpoint: where the checkpoint is; a work directory uses its best-validation checkpoint.
    batch_size: windows per forward pass (a multiple of the number of devices used).
    devices: devices to embed on; default this process's local devices.
    dtype: compute dtype of the forward pass ("float32" or "bfloat16"); default float32, whatever
      the training dtype: exact, cheap next to training, and an untrained encoder's embeddings
      need it (see `untrained_embedder`).
    features: "embedding" (the contrastive embeddings) or "pooled" (each encoder's pooled
      features before its final linear layer; `SleepFM.__call__`).
  """
  meta, config, in_channels, channels, mesh = _architecture(checkpoint, batch_size, devices,
                                                            dtype)

  def build():  # weights and BN statistics come from the checkpoint; the seed is irrelevant
    return build_model(config, in_channels, seed=0)

  abstract = nnx.eval_shape(build)
  weights = nnx.state(abstract, nnx.Not(nnx.RngState))
  template = nnx.to_pure_dict(weights)
  restored = checkpointing.load_model(checkpoint, template, sharding.replicated(mesh))
  model = build()
  state = nnx.state(model, nnx.Not(nnx.RngState))
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(model, state)
  return Embedder(model, meta, channels, batch_size, mesh, os.path.abspath(checkpoint),
                  check_features(features))


def untrained_embedder(checkpoint: str, *, seed: int = 0, batch_size: int = 64,
                       devices: Sequence[jax.Device] | None = None,
                       dtype: str | None = None, features: str = "embedding") -> Embedder:
  """The checkpoint's architecture and channels with freshly initialised weights (BN statistics at
  their initial values), nothing restored: the control that tells what pretraining added to the
  probes over a random convolutional feature map of the same shape. `dtype` as in
  `load_embedder`: its window-to-window variation is about 1e-6 of the embedding's magnitude
  (untrained BN statistics), which float32 keeps and bfloat16 rounds away."""
  meta, config, in_channels, channels, mesh = _architecture(checkpoint, batch_size, devices,
                                                            dtype)
  model = build_model(config, in_channels, seed=seed)
  meta = {**meta, "untrained_seed": seed}
  return Embedder(model, meta, channels, batch_size, mesh,
                  f"untrained:{os.path.abspath(checkpoint)}", check_features(features))


def calibrate_untrained(embedder: Embedder, store: str | WindowStore, windows: Sequence[int],
                        *, batches: int, batch_size: int | None = None,
                        seed: int = 0) -> Embedder:
  """Estimates an untrained embedder's BatchNorm running statistics from data, in place.

  Draws `batches` x `batch_size` (default: the run's pretraining batch size) of the given store
  `windows` at random (without replacement, `seed`): a run's pretraining windows
  (`runs.part_windows`), never the windows the probes are scored on. Every BN layer's running statistics become the average of its train-mode batch
  statistics (`models.batch_stats.calibrate_batch_stats`). The weights stay random: the
  "calibrated untrained" control, beside `untrained_embedder`'s initial statistics
  (docs/results.md §13).
  """
  store = store if isinstance(store, WindowStore) else WindowStore(store)
  if "untrained_seed" not in embedder.meta:
    raise ValueError(f"{embedder.checkpoint}: only an untrained embedder is calibrated here (a "
                     "trained one keeps the running statistics its training estimated)")
  if batch_size is None:
    batch_size = int(embedder.meta["config"]["batch_size"])
  if batches < 1 or batch_size < 1:
    raise ValueError(f"batches and batch_size must be positive, got {batches}, {batch_size}")
  pool = np.asarray(windows, np.int64).reshape(-1)
  if len(pool) < batches * batch_size:
    raise ValueError(f"{store.path}: {len(pool)} windows given, fewer than the {batches} x "
                     f"{batch_size} the calibration draws")
  picks = np.random.default_rng(seed).choice(pool, batches * batch_size, replace=False)
  source = pipeline.WindowSource(store.path, picks, embedder.modalities)
  index = embedder.channel_index(store)

  def inputs():
    for b in range(batches):
      yield embedder._inputs(source.get_batch(np.arange(b * batch_size, (b + 1) * batch_size)),
                             index)[0]

  calibrate_batch_stats(embedder.model, inputs())
  embedder.__dict__.pop("_forward", None)  # the jitted forward captured the old statistics
  embedder.meta = {**embedder.meta, "bn_calibration": {
      "batches": int(batches), "batch_size": int(batch_size), "seed": int(seed),
      "windows_drawn_from": int(len(pool))}}
  embedder.checkpoint = embedder.checkpoint.replace("untrained:", "untrained+bn_calibrated:", 1)
  return embedder


def _architecture(checkpoint: str, batch_size: int, devices: Sequence[jax.Device] | None,
                  dtype: str | None = None):
  meta = checkpointing.load_meta(checkpoint)
  config = ml_collections.ConfigDict(meta["config"])
  config.model.dtype = dtype or "float32"  # the forward pass's, not the training dtype
  in_channels = {m: int(n) for m, n in meta["in_channels"].items()}
  channels = {m: tuple(c) for m, c in meta["channels"].items()}
  devices = list(devices or jax.local_devices())
  if batch_size % len(devices):
    raise ValueError(f"batch_size {batch_size} is not a multiple of the {len(devices)} devices")
  return meta, config, in_channels, channels, sharding.make_mesh(devices=devices)


def export_store(checkpoint: str | Embedder, store: str | WindowStore, out_dir: str, *,
                 recordings: Sequence[str] | None = None, batch_size: int = 64,
                 progress: bool = True) -> pathlib.Path:
  """Embeds every window of (the given recordings of) a store; returns the index path.

  With several processes, each embeds every P-th recording on its local devices; all processes
  must call this. Process 0 writes the index after a barrier.
  """
  embedder = (checkpoint if isinstance(checkpoint, Embedder)
              else load_embedder(checkpoint, batch_size=batch_size))
  store = store if isinstance(store, WindowStore) else WindowStore(store)
  index = embedder.channel_index(store)
  units_lib.check_same(units_lib.of_checkpoint(embedder.meta), units_lib.of_store(store),
                       embedder.channels, checkpoint=embedder.checkpoint, store=str(store.path))
  wanted = list(recordings) if recordings is not None else list(store.recording_ids)
  unknown = sorted(set(wanted) - set(store.recording_ids))
  if unknown:
    raise ValueError(f"{store.path}: no recordings {unknown} in this store")
  pi, pc = jax.process_index(), jax.process_count()
  mine = wanted[pi::pc]
  out_dir = pathlib.Path(out_dir)
  meta = {"checkpoint": embedder.checkpoint, "step": embedder.meta.get("step"),
          "mode": embedder.meta.get("config", {}).get("loss", {}).get("mode"),
          "store": str(store.path), "channels": {m: list(c) for m, c in embedder.channels.items()},
          "features": embedder.features}
  if "untrained_seed" in embedder.meta:  # a control, not a trained model: say so in the index
    meta.update(step=0, mode="untrained", untrained_seed=embedder.meta["untrained_seed"])
    if "bn_calibration" in embedder.meta:
      meta.update(bn_calibration=embedder.meta["bn_calibration"])
  writer = emb_format.EmbeddingWriter(out_dir, **meta)
  subject_of = {r["recording_id"]: r["subject_id"] for r in store.recordings}
  bar = _progress(len(mine), progress and pi == 0)
  for rec in mine:
    source = pipeline.WindowSource(store.path, store.indices_for_recording(rec),
                                   embedder.modalities)
    embs: dict[str, list] = {m: [] for m in embedder.modalities}
    present: dict[str, list] = {m: [] for m in embedder.modalities}
    labels: dict[str, list] = {k: [] for k in ("stage", "sdb", "epoch", "start")}
    for batch in pipeline.eval_batches(source, batch_size=embedder.batch_size):
      e, p = embedder.embed_batch(batch, index)
      valid = np.asarray(batch["valid"], bool)
      for m in embedder.modalities:
        embs[m].append(e[m])
        present[m].append(p[m])
      for k in labels:
        labels[k].append(np.asarray(batch[k])[valid])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros((0,))
    writer.write(rec, subject_of[rec],
                 emb={m: np.concatenate(v) for m, v in embs.items()},
                 present={m: np.concatenate(v) for m, v in present.items()},
                 **{k: cat(v) for k, v in labels.items()})
    bar.update(1)
  bar.close()
  if pc == 1:
    return writer.finalize()
  # Each process lists what it wrote; process 0 merges the lists in the store's order.
  part = out_dir / f".part-{pi}-of-{pc}.json"
  part.write_text(json.dumps({"embedding_dim": writer.embedding_dim,
                              "recordings": writer.recordings}))
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  multihost_utils.sync_global_devices("sleepfm_jax.export: recordings written")
  path = out_dir / "index.json"
  if pi == 0:
    entries, dims = {}, set()
    for i in range(pc):
      data = json.loads((out_dir / f".part-{i}-of-{pc}.json").read_text())
      dims.add(data["embedding_dim"])
      entries.update({r["recording_id"]: r for r in data["recordings"]})
    dims.discard(None)
    emb_format.write_index(out_dir, [entries[r] for r in wanted if r in entries],
                           dims.pop() if dims else None, **meta)
    for i in range(pc):
      (out_dir / f".part-{i}-of-{pc}.json").unlink()
  multihost_utils.sync_global_devices("sleepfm_jax.export: index written")
  return path


def _is_store(path: str | os.PathLike) -> bool:
  index = pathlib.Path(path) / "index.json"
  if not index.is_file():
    return False
  try:
    return json.loads(index.read_text()).get("format") == "sleepfm-jax-window-store"
  except (OSError, json.JSONDecodeError):
    return False


def preprocess_like(embedder: Embedder, paths, store_dir: str, *, manifest: str | None = None,
                    workers: int = 1, progress: bool = True, annotations=None) -> dict:
  """Preprocesses recordings exactly as the checkpoint's training store was; returns the report.

  `paths`: files or folders, or MNE Raw objects (with `annotations`, see `embed`)."""
  from sleepfm_jax.data import discovery, mne_io  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import PreprocessConfig, preprocess  # pylint: disable=import-outside-toplevel

  meta = embedder.meta
  settings = dict(meta.get("preprocessing") or {})
  settings.update(sample_rate=int(meta["sample_rate"]), montage=meta["montage"],
                  window_seconds=float(meta.get("window_seconds", 30.0)), workers=workers,
                  drop_unscored=False)  # embed every window; unscored ones keep stage -1
  known = {f.name for f in dataclasses.fields(PreprocessConfig)}
  config = PreprocessConfig.from_dict({k: v for k, v in settings.items() if k in known})
  if mne_io.are_raws(paths):
    config = dataclasses.replace(config, workers=1)  # the Raw objects stay in this process
    return preprocess(mne_io.specs_for(paths, annotations), store_dir, config, progress=progress)
  paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  specs, unpaired = discovery.discover([str(p) for p in paths], manifest=manifest)
  if not specs:
    raise ValueError(f"no PSG recordings found in {paths}"
                     + (f"; unpaired files: {unpaired}" if unpaired else ""))
  return preprocess(specs, store_dir, config, unpaired=unpaired, progress=progress)


def embed(paths, checkpoint: str, *, annotations=None, out_dir: str | None = None,
          batch_size: int = 64, manifest: str | None = None, workers: int = 1,
          progress: bool = True, dtype: str | None = None) -> emb_format.EmbeddingSet:
  """Embeds PSG files, folders, a window store or MNE Raw objects; returns an `EmbeddingSet`.

  Files are preprocessed like the checkpoint's training data (into a temporary store unless
  `out_dir` is given, which then also keeps the store under `out_dir/store` and the embedding files
  under `out_dir/embeddings`). Recordings that cannot be read are reported and skipped, as in
  `experiments/preprocess.py`. `paths` may also be an `mne.io.Raw` (or a list of them, as YASA and
  MNE users hold nights) with `annotations` an `mne.Annotations` (or one per Raw; default: each
  Raw's own annotations), read through `data.mne_io`. `dtype`: as in `load_embedder`.
  """
  from sleepfm_jax.data import mne_io  # pylint: disable=import-outside-toplevel

  embedder = load_embedder(checkpoint, batch_size=batch_size, dtype=dtype)
  raws = mne_io.are_raws(paths)
  paths_list = [] if raws else [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  with tempfile.TemporaryDirectory(prefix="sleepfm-embed-") as tmp:
    root = pathlib.Path(out_dir or tmp)
    if len(paths_list) == 1 and _is_store(paths_list[0]):
      store = str(paths_list[0])
    else:
      store = str(root / "store")
      report = preprocess_like(embedder, paths if raws else paths_list, store, manifest=manifest,
                               workers=workers, progress=progress, annotations=annotations)
      if not report["files"]["ok"]:
        raise ValueError(f"no recording could be preprocessed: {report.get('skipped')}")
    index = export_store(embedder, store, str(root / "embeddings"), progress=progress)
    return emb_format.load_embeddings(index.parent)


def _progress(total: int, enabled: bool):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  return tqdm(total=total, disable=not enabled, unit="rec", desc="embed", dynamic_ncols=True)
