"""Pieces every config shares: the argument parser of `get_config`, the optimizer and encoder blocks.

`parse_arg` reads the one string a config file's `get_config(arg)` receives (what follows the colon
in `--config=pretrain.py:demo,quick`): comma-separated items, the first bare item naming the preset,
other bare items switching boolean options on, and `key=value` items setting typed options. The
blocks are written here once and filled in by every config that trains an encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections


def _convert(name: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() not in ("true", "false", "1", "0", ""):
      raise ValueError(f"config option {name}={text!r}: expected true or false")
    return text.lower() in ("true", "1")
  return type(default)(text) if default is not None else text


def parse_arg(arg: str | None, presets: Sequence[str], **options: Any) -> ml_collections.ConfigDict:
  """Parses a `get_config` argument such as "demo", "demo,quick" or "paper,steps=200".

  Args:
    arg: the argument (None or "" means the first preset, all options at their defaults).
    presets: the preset names this config knows; the first is the default.
    **options: option name -> default value (its type converts the text: bool, int, float, str).

  Returns:
    A ConfigDict with `preset` and one entry per option.

  Raises:
    ValueError: an unknown preset, an unknown option, or a value of the wrong type.
  """
  out = ml_collections.ConfigDict({"preset": presets[0], **options})
  preset_given = False
  for item in (s.strip() for s in (arg or "").split(",")):
    if not item:
      continue
    name, sep, value = item.partition("=")
    if not sep and name in presets and not preset_given:
      out.preset, preset_given = name, True
    elif name in options:
      out[name] = _convert(name, value if sep else "true", options[name])
    elif not sep:
      raise ValueError(f"unknown preset or option {name!r} in config argument {arg!r}; presets: "
                       f"{list(presets)}, options: {sorted(options)}")
    else:
      raise ValueError(f"unknown option {name!r} in config argument {arg!r}; options: "
                       f"{sorted(options)}")
  return out


def optimizer() -> ml_collections.ConfigDict:
  """The `optim` block (read by `training.factories.make_optimizer` / `make_schedule`)."""
  o = ml_collections.ConfigDict()
  o.name = "adamw"  # "sgd" or "adamw"
  o.lr = 1e-3
  o.momentum = 0.9  # sgd
  o.weight_decay = 1e-4
  o.schedule = "cosine"  # "cosine" (with warmup), "step" (StepLR), "constant"
  o.warmup_steps = 0
  o.step_every_epochs = 5  # "step": multiply by step_factor every this many epochs
  o.step_factor = 0.1
  o.grad_clip = 0.0  # global-norm clip; 0 = off
  o.grad_accum = 1  # micro-batches per update (contrastive negatives stay within each micro-batch)
  return o


def original_optimizer(o: ml_collections.ConfigDict) -> None:
  """Sets an `optim` block to the original SleepFM's: SGD momentum 0.9, LR 1e-3, StepLR x0.1 every
  5 epochs, no weight decay."""
  o.update(name="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0, schedule="step",
           step_every_epochs=5, step_factor=0.1)


def encoder() -> ml_collections.ConfigDict:
  """The `model` block's EffNet-1D shape (`training.factories.encoder_kwargs`): the original's."""
  m = ml_collections.ConfigDict()
  m.widths = (32, 16, 24, 40, 80, 112, 192, 320)  # stem, then the 7 MBConv stages
  m.depths = (1, 2, 2, 3, 3, 3, 3)
  m.head_width = 1280
  m.dropout = 0.5
  # compute dtype: "float32", "bfloat16" (parameters, BN statistics, the loss and the
  # temperature stay float32) or "auto" (bfloat16 on accelerators, float32 on CPU; the `paper`
  # preset's). bfloat16 training passed its check by outcome (docs/model.md, results.md §4b).
  m.dtype = "float32"
  # "block": keep only each bottleneck's input for the backward pass and recompute the rest
  # there (less memory, more compute; docs/performance.md "Memory"); "block:N": only in the
  # first N MBConv stages (the longest activations). "none": keep everything.
  m.remat = "none"
  # "batch": the original's BatchNorm; "group:G": GroupNorm with G groups (per-sample statistics,
  # so nothing in a window's embedding depends on the rest of its batch; docs/model.md).
  m.norm = "batch"
  return m


def copy_encoder(source: ml_collections.ConfigDict, target: ml_collections.ConfigDict) -> None:
  """Sets `target`'s encoder fields (those of `encoder()`) to `source`'s: the same EffNet-1D."""
  for key in encoder():
    target[key] = source[key]
