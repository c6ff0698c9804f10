"""Cross-modal shift augmentation: what it shifts, by how much, and that runs stay reproducible."""

import numpy as np
import pytest

from sleepfm_jax.data.augment import CrossModalShift, roll_rows
from sleepfm_jax.data.channels import Montage
from sleepfm_jax.data.pipeline import WindowSource, train_dataset, train_iterator
from sleepfm_jax.data.store import StoreWriter

T = 32
N = 40


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
  """Window g's channel c holds 1000 * g + 100 * c + t at sample t (ECG: minus that)."""
  path = tmp_path_factory.mktemp("aug") / "store"
  w = StoreWriter(path, montage=Montage(bas=("C3-M2", "E1-M2"), ecg=("ECG",), resp=()),
                  sample_rate=16, window_seconds=2.0, dtype="float32")
  g = np.arange(N)
  t = np.arange(T)
  bas = 1000.0 * g[:, None, None] + 100.0 * np.arange(2)[None, :, None] + t[None, None, :]
  w.write_recording("r", "s", {
      "bas": bas.astype(np.float32), "ecg": -(1000.0 * g[:, None, None] + t).astype(np.float32),
      "stage": (g % 5).astype(np.int8), "sdb": np.full(N, -1, np.int8),
      "epoch": g.astype(np.int32), "start": 30.0 * g})
  w.finalize()
  return path


def _shifts(batch):
  """Per window: (window id, bas shift of each channel, ecg shift), read back from the ramps."""
  g = batch["index"]
  bas0 = batch["bas"][:, :, 0] - 1000.0 * g[:, None] - 100.0 * np.arange(2)[None, :]
  ecg0 = -batch["ecg"][:, 0, 0] - 1000.0 * g
  # sample 0 of a window rolled by s holds original sample (-s) mod T
  return g, (-bas0) % T, (-ecg0) % T


def test_roll_rows_is_np_roll_per_row():
  x = np.random.default_rng(0).normal(size=(5, 3, 17)).astype(np.float32)
  s = np.array([0, 1, -4, 16, 40])
  got = roll_rows(x, s)
  for i in range(5):
    np.testing.assert_array_equal(got[i], np.roll(x[i], s[i], axis=-1))


def test_shifts_are_bounded_independent_per_modality_and_keep_channels_aligned(store_path):
  src = WindowSource(store_path)
  it = train_iterator(train_dataset(src, global_batch=8, seed=3, cross_modal_shift=4))
  seen_bas, seen_ecg = [], []
  for _ in range(10):
    batch = next(it)
    g, bas_s, ecg_s = _shifts(batch)
    np.testing.assert_array_equal(bas_s[:, 0], bas_s[:, 1])  # one offset per modality
    # the rest of every window is its own ramp, rolled: window identity and content are kept
    for i, gi in enumerate(g):
      np.testing.assert_array_equal(
          batch["ecg"][i, 0], np.roll(-(1000.0 * gi + np.arange(T)), int(ecg_s[i])))
    seen_bas.append(bas_s[:, 0])
    seen_ecg.append(ecg_s)
  signed = lambda s: np.where(s > T // 2, s - T, s)
  bas_all, ecg_all = signed(np.concatenate(seen_bas)), signed(np.concatenate(seen_ecg))
  assert np.abs(bas_all).max() <= 4 and np.abs(ecg_all).max() <= 4
  assert set(bas_all) == set(range(-4, 5))  # 80 draws of 9 values: all of them occur
  assert np.mean(bas_all != ecg_all) > 0.6  # independent draws differ 8 times in 9


def test_zero_shift_is_the_plain_pipeline(store_path):
  src = WindowSource(store_path)
  a = train_dataset(src, global_batch=8, seed=3)
  b = train_dataset(src, global_batch=8, seed=3, cross_modal_shift=0)
  for i in range(4):
    for k in a[i]:
      np.testing.assert_array_equal(a[i][k], b[i][k])


@pytest.mark.parametrize("count", [2, 4])
def test_augmented_global_batch_is_the_same_for_any_process_count(store_path, count):
  src = WindowSource(store_path)
  one = train_dataset(src, global_batch=8, seed=5, cross_modal_shift=3)
  parts = [train_dataset(src, global_batch=8, seed=5, cross_modal_shift=3, process_index=p,
                         process_count=count) for p in range(count)]
  for i in range(6):
    for k in ("bas", "ecg", "index"):
      np.testing.assert_array_equal(np.concatenate([p[i][k] for p in parts]), one[i][k])


def test_augmented_iterator_resumes_exactly(store_path):
  ds = train_dataset(WindowSource(store_path), global_batch=8, seed=7, cross_modal_shift=5)
  it = train_iterator(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(3)]
  it2 = train_iterator(ds)
  it2.set_state(state)
  for w in want:
    got = next(it2)
    for k in w:
      np.testing.assert_array_equal(got[k], w[k])


def test_rejects_negative_shift_and_rows_outside_the_batch():
  with pytest.raises(ValueError, match="max_shift"):
    CrossModalShift(("bas",), -1, local_batch=4, global_batch=8)
  with pytest.raises(ValueError, match="outside"):
    CrossModalShift(("bas",), 2, process_index=2, local_batch=4, global_batch=8)
