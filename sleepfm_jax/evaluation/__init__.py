"""Downstream evaluation on exported embeddings (numpy + scikit-learn + matplotlib; never jax).

Modules: `embeddings` (export format v2), `predictions` (predictions format v1), `splits`
(subject-wise / time-blocked folds), `probes` (logistic-regression probes), `metrics` (metrics and
subject bootstrap CIs), `retrieval` (cross-modal retrieval), `features` (spectral baseline),
`suite` (one evaluation run), `report` (markdown/JSON/PNG report). See docs/evaluation.md.
"""
