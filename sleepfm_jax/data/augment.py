"""Training-time augmentation of window batches (numpy only; runs inside the Grain pipeline).

`CrossModalShift`: each modality of each window is rolled in time by its own random offset of at
most `max_shift` samples (all channels of a modality by the same offset, so a modality's channels
stay aligned with each other). A contrastive model can match the modalities of one window by their
exact timing: the beat-to-beat intervals seen in the ECG and, through the cardiac field, in the EEG
and chin EMG, or the breathing phase seen in the airflow and in the heart rate. Independent shifts of
a few seconds take that cue away and leave what changes more slowly (stage, arousals, movements,
breathing rate and depth, respiratory events), which is what the downstream tasks read.

The roll is circular: the samples shifted out of one end of the window come back at the other.
Offsets are drawn for the whole global batch from the element's seeded generator and each process
keeps its own rows, so a run sees the same augmented batch whatever its process count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def roll_rows(x: np.ndarray, shifts: np.ndarray) -> np.ndarray:
  """`np.roll` of each row `x[i]` ([B, C, T]) by `shifts[i]` samples along the last axis."""
  b, _, t = x.shape
  shifts = np.asarray(shifts, dtype=np.int64).reshape(b)
  idx = (np.arange(t)[None, :] - shifts[:, None]) % t  # out[i, :, j] = x[i, :, j - s_i]
  return np.take_along_axis(x, idx[:, None, :], axis=2)


class CrossModalShift:
  """Grain random map: rolls every modality of every window by an independent random offset.

  Args:
    modalities: the batch keys to shift (e.g. ("bas", "ecg", "resp")).
    max_shift: largest offset in samples; offsets are uniform integers in [-max_shift, max_shift].
    process_index, local_batch: this process's rows of the global batch
      (rows [process_index * local_batch, (process_index + 1) * local_batch)).
    global_batch: rows of the global batch the offsets are drawn for.
  """

  def __init__(self, modalities: Sequence[str], max_shift: int, *, process_index: int = 0,
               local_batch: int, global_batch: int):
    if max_shift < 0:
      raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if not 0 <= process_index * local_batch < global_batch:
      raise ValueError(f"process {process_index} x {local_batch} rows lies outside a global batch "
                       f"of {global_batch}")
    self.modalities = tuple(modalities)
    self.max_shift = int(max_shift)
    self.start = process_index * local_batch
    self.stop = self.start + local_batch
    self.global_batch = global_batch

  def __call__(self, batch: dict[str, np.ndarray], rng: np.random.Generator):
    shifts = rng.integers(-self.max_shift, self.max_shift + 1,
                          size=(self.global_batch, len(self.modalities)))[self.start:self.stop]
    out = dict(batch)
    for j, m in enumerate(self.modalities):
      out[m] = roll_rows(batch[m], shifts[:, j])
    return out
