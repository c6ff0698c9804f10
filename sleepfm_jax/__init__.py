"""sleepfm-jax: a JAX/Flax reimplementation of SleepFM (Thapa et al., ICML 2024).

This top-level module imports nothing heavy: Grain worker processes import `sleepfm_jax.data`, and
they must never import jax. The embedding API is loaded on first use.
"""

__version__ = "0.1.0"


def embed(*args, **kwargs):
  """Embeds PSG recordings (files, folders, a window store, or `mne.io.Raw` objects with optional
  `mne.Annotations`) with a pretrained checkpoint; see `sleepfm_jax.export.embed`."""
  from sleepfm_jax.export import embed as _embed  # pylint: disable=import-outside-toplevel

  return _embed(*args, **kwargs)
