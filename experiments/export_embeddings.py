r"""Exports per-window embeddings from a pretrained checkpoint.

  # every recording of a window store
  python experiments/export_embeddings.py --checkpoint=runs/demo/pretrain_loo \
      --store=runs/demo/stores/synthetic --out=runs/demo/embeddings_loo
  # EDF/EDF+/WFDB files or folders, preprocessed like the checkpoint's training data
  python experiments/export_embeddings.py --checkpoint=runs/demo/pretrain_loo \
      --input=/data/my_psg --out=runs/my_psg_embeddings

  # the encoders' pooled features before their final linear layer (SimCLR-style evaluation)
  python experiments/export_embeddings.py --checkpoint=runs/demo/pretrain_loo --features=pooled \
      --store=runs/demo/stores/synthetic --out=runs/demo/pooled_loo

  # control: the same architecture and channels with random weights (what did pretraining add?)
  python experiments/export_embeddings.py --checkpoint=runs/demo/pretrain_loo --untrained_seed=0 \
      --store=runs/demo/stores/synthetic --out=runs/demo/embeddings_untrained
  # the same, with BatchNorm statistics estimated on 50 batches of the run's pretraining windows
  python experiments/export_embeddings.py --checkpoint=runs/demo/pretrain_loo --untrained_seed=0 \
      --calibrate_batches=50 --store=runs/demo/stores/synthetic --out=runs/demo/embeddings_cal

Output: one .npz per recording plus index.json (format v1, docs/evaluation.md).
"""

from absl import app, flags

from sleepfm_jax import cli

_CKPT = flags.DEFINE_string("checkpoint", None, "Work directory, best/, checkpoints/ or a step.",
                            required=True)
_STORE = flags.DEFINE_string("store", None, "A window store to embed.")
_INPUT = flags.DEFINE_list("input", None, "EDF/WFDB files or folders to preprocess and embed.")
_MANIFEST = flags.DEFINE_string("manifest", None, "Optional manifest CSV for --input.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_RECORDINGS = flags.DEFINE_list("recordings", None, "Only these recording ids (with --store).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Windows per forward pass.")
_UNTRAINED = flags.DEFINE_integer(
    "untrained_seed", None, "Control: embed with the checkpoint's architecture and channels but "
    "freshly initialised weights from this seed (nothing restored; with --store).")
_CALIBRATE = flags.DEFINE_integer(
    "calibrate_batches", 0, "With --untrained_seed: estimate the random encoders' BatchNorm "
    "statistics on this many batches (of the run's batch size) of the run's pretraining windows "
    "in --store, instead of keeping their initial values (0).")
_WORKERS = flags.DEFINE_integer("workers", 1, "Preprocessing processes (with --input).")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"],
                           "Compute dtype of the forward pass (default: float32, whatever the training "
                           "dtype).")
_FEATURES = flags.DEFINE_enum(
    "features", "embedding", ["embedding", "pooled"],
    "embedding: the contrastive embeddings; pooled: each encoder's pooled features before its "
    "final linear layer (with --store).")
cli.define_renamed("output", "out")
cli.require("out")
cli.define_distributed_flags()
cli.define_compilation_cache_flag()


def main(argv):
  del argv
  if bool(_STORE.value) == bool(_INPUT.value):
    raise app.UsageError("give exactly one of --store or --input")
  if _UNTRAINED.value is not None and not _STORE.value:
    raise app.UsageError("--untrained_seed works with --store")
  if _CALIBRATE.value and _UNTRAINED.value is None:
    raise app.UsageError("--calibrate_batches works with --untrained_seed")
  if _FEATURES.value != "embedding" and not _STORE.value:
    raise app.UsageError("--features=pooled works with --store")
  cli.start()
  import jax  # pylint: disable=import-outside-toplevel

  from sleepfm_jax import export  # pylint: disable=import-outside-toplevel

  out = _OUT.value
  if _STORE.value:
    if _UNTRAINED.value is not None:
      source = export.untrained_embedder(_CKPT.value, seed=_UNTRAINED.value,
                                         batch_size=_BATCH.value, dtype=_DTYPE.value,
                                         features=_FEATURES.value)
      if _CALIBRATE.value:
        from sleepfm_jax.data.store import WindowStore  # pylint: disable=import-outside-toplevel
        from sleepfm_jax.training import runs  # pylint: disable=import-outside-toplevel

        store = WindowStore(_STORE.value)
        windows = runs.part_windows(runs.run_splits(_CKPT.value), store, "pretrain")
        export.calibrate_untrained(source, store, windows, batches=_CALIBRATE.value,
                                   seed=_UNTRAINED.value)
    else:
      source = export.load_embedder(_CKPT.value, batch_size=_BATCH.value, dtype=_DTYPE.value,
                                    features=_FEATURES.value)
    index = export.export_store(source, _STORE.value, out, recordings=_RECORDINGS.value,
                                batch_size=_BATCH.value)
    if jax.process_index() == 0:
      print(f"embeddings: {index}")
  else:
    es = export.embed(_INPUT.value, _CKPT.value, out_dir=out, batch_size=_BATCH.value,
                      manifest=_MANIFEST.value, workers=_WORKERS.value, dtype=_DTYPE.value)
    print(f"embedded {len(es)} windows of {len(es.recordings)} recording(s) into "
          f"{out}/embeddings (store: {out}/store)")
  jax.distributed.shutdown()  # leave the job now, not from an exit handler (no-op if none)


if __name__ == "__main__":
  cli.run(main)
