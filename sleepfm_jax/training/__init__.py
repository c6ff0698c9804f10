"""The training side: losses, sharding, checkpoints, the trainers, and PyTorch interop.

Importing this package imports nothing; each module loads what it needs. `runs` (a run's data plan
and `splits.json`) and `hostmem` are numpy-only and never import jax.
"""
