"""The README's main job (`experiments/demo.py`): ``get_config("")`` or ``get_config("quick")``.

  default  24 SYNTHETIC nights of 1.5 h at 32 Hz, the `pretrain.py:demo` run for 500 steps, probes
           (concat, BAS, respiratory) of the pretrained and of the untrained encoders with the
           probe protocol's defaults and 1000 bootstrap replicates, retrieval among all held-out
           windows.
  quick    8 nights of 45 min at 32 Hz, `pretrain.py:demo,quick` (a tiny encoder, 20 steps), a
           smaller C grid and 100 bootstrap replicates: about 2 minutes on 2 CPU cores (tests).

`demo.py`'s flags (--subjects, --hours, --sample_rate, --seed, --steps) override these fields.
"""

import ml_collections

from sleepfm_jax.configs import common
from sleepfm_jax.evaluation.probes import ProbeConfig
from sleepfm_jax.evaluation.suite import SuiteConfig

PRESETS = ("default",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  opts = common.parse_arg(arg, PRESETS, quick=False)
  c = ml_collections.ConfigDict()
  c.quick = opts.quick
  # -- data: SYNTHETIC nights, one per subject --
  c.subjects = 8 if opts.quick else 24
  c.hours = 0.75 if opts.quick else 1.5
  c.seed = 0  # synthetic data and training
  c.sample_rate = 32  # store rate (the paper: 256)
  # -- pretraining: the arguments of configs/pretrain.py --
  c.pretrain = "demo,quick" if opts.quick else "demo"
  c.steps = 0 if opts.quick else 500  # if > 0: pretraining steps instead of the preset's
  # -- evaluation --
  probe = ProbeConfig()
  c.inner_folds = 2 if opts.quick else probe.inner_folds
  c.c_grid = (0.01, 0.1, 1.0) if opts.quick else probe.c_grid
  c.max_outer_folds = probe.outer_folds  # fewer when there are fewer held-out subjects
  c.n_boot = 100 if opts.quick else SuiteConfig.n_boot
  c.tsne_points = 500 if opts.quick else 2000
  # probe features (both the pretrained and the untrained encoders): the headline concat, and
  # each task's own modality
  c.features = ("concat",) if opts.quick else ("bas", "resp", "concat")
  return c
