"""Configs as code: `get_config(arg)` per file, every preset overriding one `base_config()`.

  preprocess.py  how recordings become a window store (`data.preprocess.PreprocessConfig`'s fields)
  pretrain.py    contrastive pretraining (`training.train`)
  supervised.py  the end-to-end supervised CNN baseline (`training.supervised`)
  demo.py        the README's demo job (`experiments/demo.py`)
  common.py      the argument parser and the blocks the configs share (optimizer, encoder)

Command lines take them by name (`--config=paper`, `--config=demo,quick`, see `sleepfm_jax.cli`);
Python code imports them: `from sleepfm_jax.configs import pretrain; pretrain.get_config("paper")`.
"""
