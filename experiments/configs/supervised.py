"""End-to-end supervised CNN baseline: ``--config=experiments/configs/supervised.py:PRESET``.

The model is `SupervisedCNN` (the SleepFM EffNet-1D encoders, their pooled features concatenated,
one linear head), trained from scratch on raw windows in every outer fold of the probe protocol
(`sleepfm_jax.training.supervised`, docs/evaluation.md "Baselines").

Presets
  demo   a small EffNet-1D (about 0.1 M parameters per modality) for the synthetic demo store:
         minutes on 2 CPU cores. AdamW + cosine.
  paper  the full SleepFM encoder (widths 32..320, 1280-d features, dropout 0.5) on a 256 Hz
         store, with the original optimiser (SGD momentum 0.9, LR 1e-3, StepLR x0.1 every
         5 epochs, batch 32).

Any field can be overridden, e.g. ``--config.total_steps=200 --config.model.dropout=0.2``.
"""

import ml_collections


def get_config(arg: str = "demo") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.preset = arg
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
  c.model = ml_collections.ConfigDict()
  c.model.widths = (32, 16, 24, 40, 80, 112, 192, 320)
  c.model.depths = (1, 2, 2, 3, 3, 3, 3)
  c.model.head_width = 1280
  c.model.dropout = 0.5
  c.model.dtype = "float32"  # compute dtype ("bfloat16" on accelerators); params stay float32

  # -- loss -----------------------------------------------------------------------------------
  c.class_balanced = True  # cross-entropy weighted by n / (K n_c) of the fold's training labels

  # -- optimiser (read by sleepfm_jax.training.train.make_optimizer / make_schedule) ---------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 0
  c.optim.step_every_epochs = 5
  c.optim.step_factor = 0.1
  c.optim.grad_clip = 0.0
  c.optim.grad_accum = 1

  # -- loop (per outer fold) --------------------------------------------------------------------
  c.batch_size = 32
  c.num_epochs = 10.0  # over the fold's (label-fraction) training windows ...
  c.min_steps = 100  # ... but at least this many steps (tiny label fractions)
  c.total_steps = 0  # if > 0: exactly this many steps per fold
  c.eval_batch_size = 64
  c.log_every = 10
  c.transfer_guard = True

  if arg == "demo":
    c.model.widths = (16, 16, 24, 32, 48, 64, 96, 128)
    c.model.depths = (1, 1, 1, 2, 2, 2, 1)
    c.model.head_width = 256
    c.model.dropout = 0.1
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 20
    c.num_epochs = 5.0
    c.min_steps = 100
  elif arg == "paper":
    c.optim.name = "sgd"
    c.optim.lr = 1e-3
    c.optim.weight_decay = 0.0
    c.optim.schedule = "step"
    c.num_epochs = 10.0
    c.min_steps = 200
  else:
    raise ValueError(f"unknown preset {arg!r}; choose demo or paper")
  return c
