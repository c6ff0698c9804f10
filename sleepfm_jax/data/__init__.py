"""Data path: read PSG → harmonise channels → window → store → Grain pipeline.

Everything under this package is numpy-only and must never import jax: Grain worker processes import
it, and each would otherwise grab accelerator memory.
"""
