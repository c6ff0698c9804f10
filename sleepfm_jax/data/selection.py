"""Which channels of a window store a model reads, and picking them out of store batches.

One definition for every consumer: the pretraining data plan (`training.runs`), the exporter
(`export.Embedder`), the baselines (`evaluation.baselines`) and the supervised CNN
(`training.supervised`). A store holds every channel of its montage, per modality; a model reads a
subset, in its own input order. `select_channels` turns channel names into positions in the store,
refusing names the store does not have; `ChannelSelection.select` cuts those channels, their
masks and the per-window presence out of a batch (`WindowStore.get_batch`, `pipeline` batches).

A modality is *present* in a window when any of its selected channels has a good mask there; a
padded row (`valid` False) has no modality present. numpy only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from sleepfm_jax.data.channels import Montage
from sleepfm_jax.modalities import MODALITIES


@dataclasses.dataclass(frozen=True)
class ChannelSelection:
  """The channels a model reads, per modality, in the canonical modality order.

  Attributes:
    channels: modality -> channel names, in the model's input order.
    index: modality -> positions of those channels in the store's montage (int64).
  """

  channels: dict[str, tuple[str, ...]]
  index: dict[str, np.ndarray]

  @property
  def modalities(self) -> tuple[str, ...]:
    return tuple(self.channels)

  @property
  def in_channels(self) -> dict[str, int]:
    return {m: len(c) for m, c in self.channels.items()}

  def select(self, batch: Mapping[str, np.ndarray], *, dtype=np.float32, presence: bool = True,
             masks: bool = False) -> dict[str, np.ndarray]:
    """The selected channels of a store batch.

    Args:
      batch: `{modality: [B, C, T], "mask_<modality>": [B, C], "valid": [B] (padded batches)}`.
      dtype: dtype of the signals (None keeps the store's).
      presence: also return `present_<modality>` ([B] bool, False on padded rows) and, when the
        batch has it, `valid`.
      masks: also return the selected channels' masks, `mask_<modality>` ([B, C] bool).

    Returns:
      `{modality: [B, C_selected, T], ...}` with the keys asked for.
    """
    out = {}
    valid = batch.get("valid") if presence else None
    if valid is not None:
      valid = np.asarray(valid, bool)
    for m, idx in self.index.items():
      x = np.asarray(batch[m])[:, idx]
      out[m] = x if dtype is None else x.astype(dtype, copy=False)
      if masks or presence:
        mask = np.asarray(batch[f"mask_{m}"])[:, idx]
      if masks:
        out[f"mask_{m}"] = mask
      if presence:
        present = mask.any(axis=-1)
        out[f"present_{m}"] = present if valid is None else present & valid
    if valid is not None:
      out["valid"] = valid
    return out


def select_channels(montage: Montage, channels: Mapping[str, Sequence[str]] | None = None,
                    modalities: Sequence[str] | None = None, *,
                    where: str | os.PathLike = "store", who: str = "the selection",
                    hint: str = "") -> ChannelSelection:
  """Positions of the wanted channels in a store's montage.

  Args:
    montage: the store's montage (`WindowStore.montage`).
    channels: modality -> channel names; a modality left out takes every montage channel of it.
    modalities: the modalities to consider (default all); others are left out. Modalities with no
      channel (none in the montage, or an empty list) are left out too.
    where: names the store in errors (its path).
    who: names what asked for the channels in errors ("config.data.channels", "the checkpoint").
    hint: appended to the error (what to do about it).

  Returns:
    A `ChannelSelection` over the selected modalities, in the canonical order.

  Raises:
    ValueError: an unknown modality, or a channel that is not in the montage (naming both).
  """
  wanted = dict(channels or {})
  asked = tuple(modalities) if modalities is not None else MODALITIES
  unknown = sorted(set(asked) - set(MODALITIES))
  if unknown:
    raise ValueError(f"{where}: unknown modalities {unknown}; choose from {MODALITIES}")
  names, index = {}, {}
  for m in MODALITIES:
    if m not in asked:
      continue
    have = list(montage.channels(m))
    chosen = tuple(wanted.get(m, have))
    absent = [c for c in chosen if c not in have]
    if absent:
      raise ValueError(f"{where}: {who} asks for {m} channels {absent}, which the store does not "
                       f"have (not in the store's montage, which lacks them; its {m} channels are "
                       f"{have}){hint}")
    if chosen:
      names[m] = chosen
      index[m] = np.array([have.index(c) for c in chosen], np.int64)
  return ChannelSelection(names, index)
