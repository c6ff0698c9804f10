"""Flax NNX models: the EffNet-1D encoder and the three-modality SleepFM model."""
