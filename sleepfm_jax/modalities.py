"""The three modality groups and their project-wide order.

A leaf module (it imports nothing), shared by the data path, the models, the losses and the
evaluation, so that none of them imports another just for these names. The order is the order of
encoders, of loss terms and of the `concat` features; it is also sorted, which is the order in
which `jax.jit` flattens a dict keyed by modality.
"""

MODALITIES = ("bas", "ecg", "resp")  # brain activity (EEG/EOG/EMG), ECG, respiratory
