"""SleepFM: one EffNet-1D encoder per modality and a learnable temperature.

Also `SupervisedCNN`, the end-to-end supervised baseline built from the same encoders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sleepfm_jax.modalities import MODALITIES  # the project-wide order
from sleepfm_jax.models.effnet1d import EffNet1D, torch_default_init


def _present(in_channels: Mapping[str, int]) -> tuple[str, ...]:
  """Modalities with at least one channel, in the canonical order; rejects unknown names."""
  unknown = set(in_channels) - set(MODALITIES)
  if unknown:
    raise ValueError(f"unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}")
  present = tuple(m for m in MODALITIES if in_channels.get(m, 0) > 0)
  if not present:
    raise ValueError(f"no modality has channels: {dict(in_channels)}")
  return present


def _encoders(in_channels, encoder_kwargs, rngs) -> tuple[tuple[str, ...], nnx.Dict]:
  present = _present(in_channels)
  encoders = nnx.Dict({m: EffNet1D(in_channels[m], rngs=rngs, **encoder_kwargs)
                       for m in present})
  return present, encoders


FEATURES = ("embedding", "pooled")  # what `SleepFM.__call__` can return (its `features` argument)


def check_features(features: str) -> str:
  """`features` if it is one of `FEATURES`, else a ValueError naming them."""
  if features not in FEATURES:
    raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
  return features


class SleepFM(nnx.Module):
  """The contrastive pretraining model: `{modality: [B, C, T]}` -> `{modality: [B, D]}`.

  Args:
    in_channels: channels per modality, typically from the store's montage, e.g.
      `{"bas": 5, "ecg": 1, "resp": 3}`. A modality with 0 channels gets no encoder.
    temperature_init: initial value of the scalar `t`; the logit scale is `exp(t)`. The original
      initialises it to 0 (scale 1) and clamps it at >= 0 after every step (done by the trainer).
    rngs: `nnx.Rngs` with `params` and `dropout` streams.
    **encoder_kwargs: passed to every `EffNet1D` (widths, depths, embed_dim, dtype, ...).
  """

  def __init__(
      self,
      in_channels: Mapping[str, int],
      *,
      temperature_init: float = 0.0,
      rngs: nnx.Rngs,
      **encoder_kwargs: Any,
  ):
    self.modalities, self.encoders = _encoders(in_channels, encoder_kwargs, rngs)
    self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
    self.t = nnx.Param(jnp.asarray(temperature_init, jnp.float32))

  @property
  def logit_scale(self) -> jax.Array:
    return jnp.exp(self.t[...])

  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
               features: str = "embedding") -> dict[str, jax.Array]:
    """Embeds every modality that has an encoder; other batch entries are ignored.

    Args:
      batch: {modality: [B, C, T]} (other keys ignored).
      train: train mode (batch statistics, dropout) or eval mode.
      features: "embedding", the `embed_dim` outputs the contrastive loss compares; or "pooled",
        each encoder's `head_width` globally pooled features before its final linear layer (the
        representation SimCLR-style linear evaluation reads; not aligned across modalities).

    Returns unnormalised float32 features; the loss L2-normalises the embeddings.
    """
    missing = [m for m in self.modalities if m not in batch]
    if missing:
      raise KeyError(f"batch lacks modalities {missing} (has {sorted(batch)})")
    check_features(features)
    if features == "pooled":
      return {m: self.encoders[m](batch[m], train=train, return_intermediates=True)[1]["pooled"]
              for m in self.modalities}
    return {m: self.encoders[m](batch[m], train=train) for m in self.modalities}


class SupervisedCNN(nnx.Module):
  """End-to-end supervised baseline: the same encoders, features concatenated, a linear head.

  Each encoder is built without its final linear layer (`embed_dim=None`), so it yields its
  `head_width` (1280) pooled features after ReLU and dropout; the features of the modalities are
  concatenated in the canonical order and a single `fc` maps them to `num_classes` logits. With
  one modality this is exactly the original's `EffNetSupervised`.
  """

  def __init__(
      self,
      in_channels: Mapping[str, int],
      *,
      num_classes: int = 5,
      rngs: nnx.Rngs,
      **encoder_kwargs: Any,
  ):
    encoder_kwargs = dict(encoder_kwargs, embed_dim=None)
    self.modalities, self.encoders = _encoders(in_channels, encoder_kwargs, rngs)
    self.in_channels = {m: int(in_channels[m]) for m in self.modalities}
    width = sum(self.encoders[m].out_features for m in self.modalities)
    self.fc = nnx.Linear(width, num_classes, kernel_init=torch_default_init(width),
                         bias_init=torch_default_init(width), rngs=rngs)

  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool) -> jax.Array:
    """Returns float32 logits `[B, num_classes]`."""
    feats = [self.encoders[m](batch[m], train=train) for m in self.modalities]
    return self.fc(jnp.concatenate(feats, axis=-1)).astype(jnp.float32)
