"""Linear recoverability of window features from an embedding (evaluation/content.py)."""

import numpy as np
import pytest

from sleepfm_jax.evaluation import content


def test_recoverability_separates_encoded_from_absent_features():
  rng = np.random.default_rng(0)
  n, d = 600, 16
  groups = np.repeat(np.arange(12), n // 12)
  x = rng.normal(size=(n, d))
  encoded = x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
  absent = rng.normal(size=n)
  # A per-subject value the embedding does not carry: an ungrouped split could memorise it
  # through subject-specific structure; the grouped folds score it on unseen subjects.
  subject_only = rng.normal(size=12)[groups]
  targets = np.stack([encoded, absent, subject_only, np.ones(n)], 1)
  r2 = content.recoverability(x, targets, groups, ["encoded", "absent", "subject", "const"])
  assert set(r2) == {"encoded", "absent", "subject"}  # the constant column is skipped
  assert r2["encoded"] > 0.95
  assert r2["absent"] < 0.05 and r2["subject"] < 0.05


def test_recoverability_rejects_mismatched_inputs():
  with pytest.raises(ValueError, match="differ in length"):
    content.recoverability(np.zeros((5, 2)), np.zeros((4, 1)), np.zeros(5), ["a"])
  with pytest.raises(ValueError, match="names"):
    content.recoverability(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros(5), ["a"])
