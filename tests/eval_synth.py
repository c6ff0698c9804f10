"""Synthetic exported embeddings with subject structure, for the evaluation tests (numpy only).

Each subject has one night: a Markov hypnogram, per-modality class means shared by all subjects, a
per-subject offset (the nuisance a subject-wise split must cope with) and window noise. The SDB
label shifts the embeddings along one direction. With `separation=0` the embeddings carry no label
information at all.
"""

import numpy as np

from sleepfm_jax.data.channels import MODALITIES
from sleepfm_jax.evaluation.embeddings import load_embeddings, save_embeddings

_TRANSITIONS = np.array([[.90, .10, .00, .00, .00],
                         [.10, .60, .30, .00, .00],
                         [.03, .02, .85, .06, .04],
                         [.00, .00, .10, .90, .00],
                         [.04, .03, .05, .00, .88]])


def hypnogram(rng, n):
  stages = [0]
  for _ in range(n - 1):
    stages.append(rng.choice(5, p=_TRANSITIONS[stages[-1]]))
  return np.array(stages, np.int8)


def recordings(n_subjects=6, n_windows=120, dim=16, separation=1.0, seed=0, sdb_scored=None,
               absent=None, subject_offset=0.5, nights=1):
  """Keyword-argument dicts for `save_embeddings`.

  Args:
    sdb_scored: subjects whose SDB labels are scored (default: all).
    absent: {modality: set of subject indices} where the modality is missing.
  """
  rng = np.random.default_rng(seed)
  means = {m: rng.normal(size=(5, dim)) for m in MODALITIES}
  sdb_dir = {m: rng.normal(size=dim) for m in MODALITIES}
  recs = []
  for s in range(n_subjects):
    offset = {m: subject_offset * rng.normal(size=dim) for m in MODALITIES}
    for night in range(nights):
      stage = hypnogram(rng, n_windows)
      stage[rng.random(n_windows) < 0.03] = -1
      apnea = (rng.random(n_windows) < 0.3).astype(np.int8)
      shared = rng.normal(size=(n_windows, dim))  # window-level signal all modalities see
      emb, present = {}, {}
      for m in MODALITIES:
        emb[m] = (separation * (means[m][np.maximum(stage, 0)] + apnea[:, None] * sdb_dir[m])
                  + offset[m] + shared + 0.7 * rng.normal(size=(n_windows, dim)))
        present[m] = np.full(n_windows, s not in (absent or {}).get(m, ()))
      scored = sdb_scored is None or s in sdb_scored
      recs.append(dict(recording_id=f"sub-{s:03d}_night-{night + 1}", subject_id=f"sub-{s:03d}",
                       emb=emb, present=present, stage=stage, sdb=apnea if scored else None,
                       epoch=np.arange(n_windows), start=30.0 * np.arange(n_windows)))
  return recs


def embedding_set(path, **kwargs):
  """Writes `recordings(**kwargs)` to `path` and loads it back."""
  save_embeddings(path, recordings(**kwargs), checkpoint="synthetic", step=0)
  return load_embeddings(path)
