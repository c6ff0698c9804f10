"""Batch composition for contrastive pretraining: batches drawn from a few recordings (numpy only).

By default (`pipeline.train_dataset`) a global batch is a uniform shuffle of all pretraining
windows, so a batch of 32 holds windows of ~30 different nights. Every negative of the contrastive
loss then comes from another night, and whatever identifies a night (its heart rate, SpO2 baseline,
EEG amplitude) is enough to reject most of them. `RecordingGroupedBatches` instead fills each global
batch with `groups` chunks of `global_batch / groups` windows, each chunk from one recording: most
negatives come from the same night as the positive, and telling them apart takes what changes
within a night (stage, arousals, respiratory events, the breathing and heart rhythm).

Each epoch (seeded by `(seed, epoch)`) shuffles the windows of every recording, cuts them into
chunks (a recording's last `n % chunk` windows of that epoch's order are left out of that epoch;
other epochs leave out others), shuffles the chunks of all recordings together and takes
consecutive `groups` of them as one batch (the chunks left over at the end are left out of that
epoch). Two chunks of one batch can come from the same recording. Recordings with fewer windows
than one chunk can never fill one and are left out of training altogether; `left_out` reports
them. The batches depend only on the seed and the batch index, so they are the same whatever the
process count, and a resumed iterator continues exactly.
"""

from __future__ import annotations

import numpy as np


class RecordingGroupedBatches:
  """Grain map with index: global batch index → the source positions of that global batch.

  Args:
    recordings: [N] recording id (any integers) of each source position.
    global_batch: windows per global batch.
    groups: recordings (chunks) per global batch; must divide `global_batch`.
    seed: the shuffle seed.
  """

  def __init__(self, recordings: np.ndarray, *, global_batch: int, groups: int, seed: int):
    recordings = np.asarray(recordings).reshape(-1)
    if groups < 1 or global_batch % groups:
      raise ValueError(f"recordings per batch ({groups}) must be >= 1 and divide the global batch "
                       f"({global_batch})")
    self.chunk = global_batch // groups
    self.groups = groups
    self.seed = int(seed)
    ids, inverse = np.unique(recordings, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    small = [i for i, m in enumerate(members) if len(m) < self.chunk]
    self.left_out = {"recordings": len(small), "windows": int(sum(len(members[i]) for i in small))}
    self._members = [m for m in members if len(m) >= self.chunk]
    chunks = sum(len(m) // self.chunk for m in self._members)
    self.batches_per_epoch = chunks // groups
    if self.batches_per_epoch < 1:
      raise ValueError(f"{len(recordings)} windows in {len(ids)} recordings do not fill one batch "
                       f"of {groups} chunks of {self.chunk} windows from one recording each")
    self._cached: tuple[int, np.ndarray] | None = None  # (epoch, plan): one attribute, so
    # reader threads that straddle an epoch boundary never pair one epoch with another's plan

  def epoch_plan(self, epoch: int) -> np.ndarray:
    """[batches_per_epoch, global_batch] source positions of every batch of `epoch`."""
    rng = np.random.default_rng([self.seed, int(epoch)])
    chunks = []
    for m in self._members:
      order = rng.permutation(m)
      n = len(order) // self.chunk * self.chunk
      chunks.append(order[:n].reshape(-1, self.chunk))
    chunks = np.concatenate(chunks)
    chunks = chunks[rng.permutation(len(chunks))]
    used = self.batches_per_epoch * self.groups
    return chunks[:used].reshape(self.batches_per_epoch, self.groups * self.chunk)

  def __call__(self, index: int, _element=None) -> np.ndarray:
    epoch, b = divmod(int(index), self.batches_per_epoch)
    cached = self._cached
    if cached is None or cached[0] != epoch:  # one plan cached: batches are read in order
      cached = self._cached = (epoch, self.epoch_plan(epoch))
    return cached[1][b].copy()

  def __getstate__(self):
    return {**self.__dict__, "_cached": None}
