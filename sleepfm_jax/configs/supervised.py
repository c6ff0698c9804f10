"""End-to-end supervised CNN baseline: ``--config=supervised.py:PRESET`` (file in this package).

The model is `SupervisedCNN` (the SleepFM EffNet-1D encoders, their pooled features concatenated,
one linear head), trained from scratch on raw windows in every outer fold of the probe protocol
(`training.supervised`, docs/evaluation.md "Baselines").

Presets
  demo   a small EffNet-1D (about 0.1 M parameters per modality) for the synthetic demo store:
         minutes on 2 CPU cores. AdamW + cosine.
  paper  the full SleepFM encoder (widths 32..320, 1280-d features, dropout 0.5) on a 256 Hz
         store, with the original optimiser (SGD momentum 0.9, LR 1e-3, StepLR x0.1 every
         5 epochs, batch 32).

Options (after the preset, comma-separated)
  model_from=PRESET  the encoder (widths, depths, head width, dropout, dtype) of the pretraining
                     preset `configs/pretrain.py:PRESET` (options joined by "+", e.g.
                     `demo,model_from=demo+quick`): the CNN then has exactly the architecture of
                     the encoders it is compared with.

Every preset only overrides `base_config()`. Any field can be overridden, e.g.
``--config.total_steps=200 --config.model.dropout=0.2``.
"""

import ml_collections

from sleepfm_jax.configs import common

PRESETS = ("demo", "paper")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # model initialisation (the same in every fold), dropout and data order
  c.num_devices = 0  # first N devices of this process; 0 = all

  # -- data -----------------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.modalities = ("bas", "ecg", "resp")  # modalities without channels are dropped
  # modality -> channel names; empty = every montage channel (--split_from_checkpoint uses the
  # checkpoint's channels, so the CNN sees what the pretrained encoders saw).
  c.data.channels = ml_collections.ConfigDict()
  c.data.worker_count = 0  # Grain worker processes (0 = in-process)
  c.data.prefetch = 2

  # -- model ----------------------------------------------------------------------------------
  c.model = common.encoder()

  # -- loss -----------------------------------------------------------------------------------
  c.class_balanced = True  # cross-entropy weighted by n / (K n_c) of the fold's training labels

  # -- optimiser ------------------------------------------------------------------------------
  c.optim = common.optimizer()

  # -- loop (per outer fold) --------------------------------------------------------------------
  c.batch_size = 32
  c.num_epochs = 10.0  # over the fold's (label-fraction) training windows ...
  c.min_steps = 100  # ... but at least this many steps (tiny label fractions)
  c.total_steps = 0  # if > 0: exactly this many steps per fold
  c.eval_batch_size = 64
  c.log_every = 10
  c.transfer_guard = True
  # dispatched, unfinished steps: -1 auto (1 on CPU, where each queued step holds its own
  # temporaries in host memory; no limit on accelerators), 0 no limit, k at most k
  c.max_steps_in_flight = -1

  # -- early stopping on an inner validation split of each fold (training/supervised.py) ---------
  c.early_stopping = ml_collections.ConfigDict()
  c.early_stopping.enabled = True  # False: every fold trains its whole budget on all its windows
  c.early_stopping.val_fraction = 0.2  # of the fold's labelled training windows (whole subjects)
  c.early_stopping.eval_every = 20  # steps between validations (and at the last step)
  c.early_stopping.patience = 5  # validations without improvement before stopping
  c.early_stopping.min_windows = 50  # fewer labelled training windows: no split, full budget
  return c


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  opts = common.parse_arg(arg, PRESETS, model_from="")
  c = base_config()
  c.preset = arg or PRESETS[0]
  if opts.preset == "demo":
    c.model.update(widths=(16, 16, 24, 32, 48, 64, 96, 128), depths=(1, 1, 1, 2, 2, 2, 1),
                   head_width=256, dropout=0.1)
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 20
    c.num_epochs = 5.0
  elif opts.preset == "paper":
    common.original_optimizer(c.optim)
    c.min_steps = 200
  if opts.model_from:
    from sleepfm_jax.configs import pretrain  # pylint: disable=import-outside-toplevel

    common.copy_encoder(pretrain.get_config(opts.model_from.replace("+", ",")).model, c.model)
  return c
