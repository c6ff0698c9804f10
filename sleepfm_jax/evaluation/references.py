"""Reference scorers that show what a metric gives away for free on a data set.

`wake_oracle`: a stager that knows perfectly whether each window is wake or sleep and guesses at
random among the sleep stages. On a recording dominated by wake (e.g. a 22-h Sleep-EDF cassette
night, 75 % out-of-bed wake) it already scores a high macro one-vs-rest AUROC, so a staging result
means little unless it clears this row. numpy only.
"""

from __future__ import annotations

import numpy as np

WAKE = 0


def wake_oracle(y_true: np.ndarray, n_classes: int = 5, seed: int = 0) -> np.ndarray:
  """[n, n_classes] probabilities: wake windows get p(W) = 1; sleep windows p(W) = 0 and a random
  (flat Dirichlet) split over the sleep stages. Labels < 0 get uniform rows (not scored)."""
  y = np.asarray(y_true, np.int64)
  rng = np.random.default_rng(seed)
  prob = np.full((len(y), n_classes), 1.0 / n_classes)
  wake = y == WAKE
  prob[wake] = np.eye(n_classes)[WAKE]
  sleep = y > WAKE
  split = rng.dirichlet(np.ones(n_classes - 1), size=int(sleep.sum()))
  prob[sleep] = np.concatenate([np.zeros((len(split), 1)), split], axis=1)
  return prob
