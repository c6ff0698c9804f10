"""Pretraining configs: ``--config=pretrain.py:PRESET[,OPTION...]`` (file in this package).

Presets
  demo      synthetic three-modality nights (labelled SYNTHETIC), small and fast: minutes on 2 CPU
            cores. AdamW + cosine, CLIP's temperature settings.
  sleepedf  the real Sleep-EDF SC4001 record (BAS + respiratory, no ECG); one subject, so splits are
            time blocks within the night.
  paper     the original SleepFM settings: 256 Hz, 30-s windows, 512-d embeddings, LOO loss,
            SGD momentum 0.9, LR 1e-3, StepLR x0.1 every 5 epochs, batch 32, temperature t=0
            clamped at t >= 0, best checkpoint by validation loss.

Options (after the preset, comma-separated)
  quick     a tiny encoder (widths 8, one block per stage, 32-d embeddings) for 20 steps, validated
            and checkpointed at the end: the demo's `--quick` run and smoke tests.
  steps=N   N training steps instead of the preset's (with `quick`: validated and checkpointed at
            step N).

Every preset only overrides `base_config()`. Any field can be overridden on the command line, e.g.
``--config.loss.mode=pairwise``; the trainer reads every field (`training.train`).
"""

import ml_collections

from sleepfm_jax.configs import common
from sleepfm_jax.training import losses

PRESETS = ("demo", "sleepedf", "paper")


# The original SleepFM starts at t = 0 (logit scale 1): cosine logits in [-1, 1] then leave the
# softmax over a batch of 32 almost flat (even perfectly aligned embeddings give a loss near
# ln(1 + 31/e) = 2.5 against 3.47 at chance, until t has grown), which a long GPU run outgrows but
# a few hundred CPU steps do not. The short presets therefore use CLIP's settings (t = log(1/0.07)
# at init, logit scale capped at 100); `paper` keeps the original's t = 0, t >= 0.
def _short_cpu_run(c: ml_collections.ConfigDict, steps: int) -> None:
  """The short presets (minutes on a CPU): CLIP's temperature, AdamW 2e-3 with 20 warm-up steps,
  dropout 0.1, validation on 8 batches."""
  c.loss.temperature_init = losses.TEMPERATURE_INIT_CLIP
  c.loss.temperature_max = losses.TEMPERATURE_MAX_CLIP
  c.model.dropout = 0.1
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 20
  c.total_steps = steps
  c.eval_max_batches = 8


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0  # use the first N devices of this process (single-process only); 0 = all

  # -- data -----------------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.store = ""  # path of a window store written by experiments/preprocess.py
  c.data.modalities = ("bas", "ecg", "resp")  # modalities with 0 channels in the store are dropped
  c.data.split = "subject"  # "subject" (by subject id) or "time" (contiguous blocks per recording)
  # Fractions of subjects (or of each recording's time line) per split. Pretraining uses "pretrain"
  # minus a validation part; "downstream" is held out for probes, as the paper's 75/25 split.
  c.data.pretrain_fraction = 0.75
  c.data.val_fraction = 0.1  # of the pretrain part
  c.data.split_seed = 0
  c.data.worker_count = 0  # Grain worker processes (0 = in-process)
  c.data.prefetch = 2  # batches buffered per worker / reader thread
  # Augmentation: roll each modality of each training window by its own random offset of up to
  # this many seconds (data/augment.py), hiding the exact cross-modal timing. 0 = off (the
  # original's setting); validation and export windows are never shifted.
  c.data.cross_modal_shift_seconds = 0.0
  # Batch composition: 0 = a global shuffle of all windows (the original); k > 0 = each batch holds
  # k chunks of batch_size / k windows, each chunk from one recording (data/sampling.py), so most
  # negatives of the contrastive loss come from the positive's own night.
  c.data.recordings_per_batch = 0

  # -- model ----------------------------------------------------------------------------------
  c.model = common.encoder()
  c.model.embed_dim = 512

  # -- loss -----------------------------------------------------------------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.mode = "leave_one_out"  # "leave_one_out" or "pairwise"
  c.loss.renormalise_rest = False  # LOO: the original does not re-normalise the others' mean
  c.loss.temperature_init = 0.0  # t; logit scale = exp(t)
  c.loss.temperature_min = losses.TEMPERATURE_MIN  # the original clamps t >= 0 after each step
  c.loss.temperature_max = float("inf")

  # -- optimiser ------------------------------------------------------------------------------
  c.optim = common.optimizer()

  # -- loop -----------------------------------------------------------------------------------
  c.batch_size = 32  # global batch (all devices, all processes)
  c.num_epochs = 10.0
  c.total_steps = 0  # if > 0, overrides num_epochs
  c.stop_at_step = 0  # if > 0, stop cleanly (with a checkpoint) after this step; --resume continues
  c.log_every = 10
  c.eval_every = 100  # validation loss every this many steps and at the end (0 = never)
  c.eval_max_batches = 0  # cap on validation batches per evaluation (0 = all)
  c.eval_seed = 0  # which validation windows, in which batches (the same at every evaluation)
  c.checkpoint_every = 100
  c.max_to_keep = 3
  c.async_checkpointing = True
  c.transfer_guard = True  # fail on hidden host<->device transfers inside the training loop
  # dispatched, unfinished steps: -1 auto (1 on CPU, where each queued step holds its own
  # temporaries in host memory; no limit on accelerators), 0 no limit, k at most k
  c.max_steps_in_flight = -1
  return c


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  opts = common.parse_arg(arg, PRESETS, quick=False, steps=0)
  c = base_config()
  c.preset = arg or PRESETS[0]
  if opts.preset == "demo":
    c.data.store = "runs/demo/stores/synthetic"
    _short_cpu_run(c, steps=300)
  elif opts.preset == "sleepedf":
    c.data.store = "runs/sleepedf/stores/sleepedf"
    c.data.modalities = ("bas", "resp")
    c.data.split = "time"
    _short_cpu_run(c, steps=600)
  elif opts.preset == "paper":
    c.data.store = "runs/paper/stores/paper"
    # "block:1" on CPU (the paper-shaped step's peak host memory below the original's), "none"
    # on accelerators: models/effnet1d.py, resolve_remat.
    c.model.remat = "auto"
    # bfloat16 compute on accelerators, float32 on CPU (no bfloat16 arithmetic there):
    # models/effnet1d.py, resolve_dtype; validated by outcome in docs/results.md §4b.
    c.model.dtype = "auto"
    common.original_optimizer(c.optim)
    c.num_epochs = 20.0
    c.eval_every = 1000
    c.checkpoint_every = 1000
  if opts.quick:
    c.model.update(widths=(8,) * 8, depths=(1,) * 7, head_width=64, embed_dim=32)
    c.total_steps = 20
  if opts.steps:
    c.total_steps = opts.steps
  if opts.quick:
    c.eval_every = c.checkpoint_every = c.total_steps
  return c
