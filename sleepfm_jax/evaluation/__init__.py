"""Downstream evaluation on exported embeddings (numpy + scikit-learn; never imports jax)."""
