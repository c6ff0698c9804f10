"""Contrastive losses on one device against hand-computed values and an independent numpy reference.

The numpy reference below restates the objective the slow way: for each term it selects the
windows where the term's sides exist, builds that sub-batch's logits, and averages the per-row
cross-entropy; `_original_loss` ports the original SleepFM reduction (sum over terms and rows,
divided by the number of terms and the batch size) for the all-present case.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sleepfm_jax.training import losses

E = math.e
E1, E2 = [1.0, 0.0], [0.0, 1.0]


def _ce_rows(logits):
  """Per-row cross-entropy with row r's label r (float64, written out)."""
  out = []
  for r, row in enumerate(logits):
    top = row.max()
    out.append(top + math.log(sum(math.exp(v - top) for v in row)) - row[r])
  return out


def _normalise(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference(embs, masks, t, mode, renormalise_rest=False):
  """Mean over active terms of mean CE over each term's sub-batch; returns (loss, {term: mean})."""
  names = list(embs)
  n = len(next(iter(embs.values())))
  e = {k: _normalise(v) for k, v in embs.items()}
  m = {k: np.ones(n, bool) if masks is None or k not in masks else np.asarray(masks[k])
       for k in names}
  scale = math.exp(t)
  terms = {}
  if mode == "pairwise":
    for i, a in enumerate(names):
      for b in names[i + 1:]:
        keep = np.flatnonzero(m[a] & m[b])
        if not len(keep):
          continue
        logits = scale * e[a][keep] @ e[b][keep].T
        terms[f"{a}->{b}"] = np.mean(_ce_rows(logits))
        terms[f"{b}->{a}"] = np.mean(_ce_rows(logits.T))
  else:
    for a in names:
      keep, rest = [], []
      for r in range(n):
        others = [e[b][r] for b in names if b != a and m[b][r]]
        if m[a][r] and others:
          keep.append(r)
          v = np.mean(others, axis=0)
          rest.append(v / np.linalg.norm(v) if renormalise_rest else v)
      if not keep:
        continue
      logits = scale * e[a][keep] @ np.array(rest).T
      terms[f"{a}->rest"] = np.mean(_ce_rows(logits))
      terms[f"rest->{a}"] = np.mean(_ce_rows(logits.T))
  loss = np.mean(list(terms.values())) if terms else 0.0
  return loss, terms


def _original_loss(embs, t, mode):
  """The original's reduction with every modality present: sum CE, / number of terms, / batch."""
  names = list(embs)
  e = [_normalise(embs[k]) for k in names]
  n, total, n_terms = len(e[0]), 0.0, 0
  if mode == "pairwise":
    for i in range(len(e)):
      for j in range(i + 1, len(e)):
        logits = e[i] @ e[j].T * math.exp(t)
        total += sum(_ce_rows(logits)) + sum(_ce_rows(logits.T))
        n_terms += 2
  else:
    for i in range(len(e)):
      other = sum(e[j] for j in range(len(e)) if j != i) / (len(e) - 1)
      logits = e[i] @ other.T * math.exp(t)
      total += sum(_ce_rows(logits)) + sum(_ce_rows(logits.T))
      n_terms += 2
  return total / n_terms / n


def _random_case(seed, n=6, d=5, names=("bas", "ecg", "resp")):
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=(n, d)).astype(np.float32) for k in names}


def _as_jnp(tree):
  return jax.tree.map(jnp.asarray, tree)


def test_pairwise_hand_computed():
  # logits (t = 0): a·bᵀ = [[1, 0, 0], [0, 1, -1], [-1, 0, 0]]
  embs = {"bas": np.array([E1, E2, [-1.0, 0.0]]), "ecg": np.array([E1, E2, [0.0, -1.0]])}
  a_to_b = [math.log(E + 2) - 1, math.log(1 + E + 1 / E) - 1, math.log(2 + 1 / E)]
  b_to_a = [math.log(E + 1 + 1 / E) - 1, math.log(E + 2) - 1, math.log(2 + 1 / E)]
  loss, metrics = losses.contrastive_loss(_as_jnp(embs), None, jnp.float32(0.0))
  assert float(loss) == pytest.approx((sum(a_to_b) + sum(b_to_a)) / 6, rel=1e-6)
  assert float(metrics["loss/bas->ecg"]) == pytest.approx(np.mean(a_to_b), rel=1e-6)
  assert float(metrics["loss/ecg->bas"]) == pytest.approx(np.mean(b_to_a), rel=1e-6)
  # bas row 2 = -e1 ties ecg columns 1 and 2 (0, 0): argmax picks column 1, a miss.
  assert float(metrics["acc/bas->ecg"]) == pytest.approx(2 / 3)
  assert int(metrics["rows/bas->ecg"]) == 3 and float(metrics["active_terms"]) == 2


def test_pairwise_hand_computed_with_mask():
  # ECG absent in window 1: the term uses windows {0, 2}; logits [[1, 0], [-1, 0]].
  embs = {"bas": np.array([E1, E2, [-1.0, 0.0]]), "ecg": np.array([E1, E2, [0.0, -1.0]])}
  masks = {"ecg": np.array([True, False, True])}
  a_to_b = [math.log(E + 1) - 1, math.log(1 / E + 1)]
  b_to_a = [math.log(E + 1 / E) - 1, math.log(2)]
  loss, metrics = losses.contrastive_loss(_as_jnp(embs), _as_jnp(masks), jnp.float32(0.0))
  assert float(loss) == pytest.approx((sum(a_to_b) + sum(b_to_a)) / 4, rel=1e-6)
  assert float(metrics["acc/bas->ecg"]) == 1.0
  assert float(metrics["acc/ecg->bas"]) == 0.5  # ecg row 2 (= -e2) ties both bas candidates
  assert int(metrics["rows/ecg->bas"]) == 2


def test_leave_one_out_hand_computed_with_missing_modality():
  # resp absent in window 1. rest(bas) = [(e1 + e2) / 2, e2] (plain mean, not re-normalised).
  embs = {"bas": np.array([E1, E2]), "ecg": np.array([E1, E2]), "resp": np.array([E2, E1])}
  masks = {"resp": np.array([True, False])}
  # logits bas·rest(bas)ᵀ = [[.5, 0], [.5, 1]]; ecg is the same; resp has one row: [[e2·e1]] = 0.
  to_rest = (math.log(math.exp(0.5) + 1) - 0.5 + math.log(math.exp(0.5) + E) - 1) / 2
  from_rest = (math.log(2) + math.log(1 + E) - 1) / 2
  loss, metrics = losses.contrastive_loss(
      _as_jnp(embs), _as_jnp(masks), jnp.float32(0.0), mode="leave_one_out")
  assert float(loss) == pytest.approx((2 * to_rest + 2 * from_rest + 0 + 0) / 6, rel=1e-6)
  assert float(metrics["loss/bas->rest"]) == pytest.approx(to_rest, rel=1e-6)
  assert float(metrics["loss/rest->ecg"]) == pytest.approx(from_rest, rel=1e-6)
  assert int(metrics["rows/resp->rest"]) == 1 and float(metrics["loss/rest->resp"]) == 0.0
  assert float(metrics["active_terms"]) == 6


@pytest.mark.parametrize("mode", losses.MODES)
@pytest.mark.parametrize("t", [0.0, 1.3])
def test_all_present_matches_original_reduction(mode, t):
  embs = _random_case(0)
  loss, metrics = losses.contrastive_loss(_as_jnp(embs), None, jnp.float32(t), mode=mode)
  assert float(loss) == pytest.approx(_original_loss(embs, t, mode), rel=2e-6)
  assert float(metrics["logit_scale"]) == pytest.approx(math.exp(t), rel=1e-6)
  assert float(metrics["active_terms"]) == 6


@pytest.mark.parametrize("mode", losses.MODES)
@pytest.mark.parametrize("renormalise_rest", [False, True])
def test_masked_matches_reference(mode, renormalise_rest):
  embs = _random_case(1, n=9)
  masks = {
      "bas": np.array([1, 1, 0, 1, 1, 1, 0, 1, 1], bool),
      "ecg": np.array([1, 0, 0, 1, 1, 0, 1, 1, 1], bool),
      "resp": np.array([0, 1, 0, 1, 0, 1, 1, 1, 0], bool),
  }
  loss, metrics = losses.contrastive_loss(
      _as_jnp(embs), _as_jnp(masks), jnp.float32(0.7), mode=mode,
      renormalise_rest=renormalise_rest)
  ref, terms = _reference(embs, masks, 0.7, mode, renormalise_rest)
  assert float(loss) == pytest.approx(ref, rel=2e-6)
  for name, value in terms.items():
    assert float(metrics[f"loss/{name}"]) == pytest.approx(value, rel=2e-6), name
  assert float(metrics["active_terms"]) == len(terms) == 6


def test_leave_one_out_with_two_modalities_is_pairwise():
  embs = _as_jnp(_random_case(2, names=("bas", "resp")))
  masks = {"resp": jnp.array([1, 1, 0, 1, 0, 1], bool)}
  pair, _ = losses.contrastive_loss(embs, masks, 0.4, mode="pairwise")
  loo, _ = losses.contrastive_loss(embs, masks, 0.4, mode="leave_one_out")
  assert float(loo) == pytest.approx(float(pair), rel=1e-6)


@pytest.mark.parametrize("mode", losses.MODES)
def test_absent_modality_gives_finite_values_and_gradients(mode):
  embs = _as_jnp(_random_case(3))
  masks = {"ecg": jnp.zeros(6, bool), "bas": jnp.array([1, 1, 1, 0, 1, 1], bool)}
  fn = jax.value_and_grad(
      lambda e, t: losses.contrastive_loss(e, masks, t, mode=mode)[0], argnums=(0, 1))
  loss, (g_embs, g_t) = fn(embs, jnp.float32(0.5))
  assert np.isfinite(float(loss)) and np.isfinite(float(g_t))
  assert all(np.isfinite(np.asarray(g)).all() for g in g_embs.values())
  assert not np.asarray(g_embs["ecg"]).any()  # an absent modality gets no gradient
  assert not np.asarray(g_embs["bas"][3]).any()  # nor does an absent window
  # Without ECG the loss is the two-modality loss of the rest (LOO: rest of bas = resp, ...).
  two = {k: embs[k] for k in ("bas", "resp")}
  ref, _ = losses.contrastive_loss(two, {"bas": masks["bas"]}, 0.5, mode=mode)
  assert float(loss) == pytest.approx(float(ref), rel=1e-6)
  _, metrics = losses.contrastive_loss(embs, masks, 0.5, mode=mode)
  assert float(metrics["active_terms"]) == (2 if mode == "pairwise" else 4)


def test_masks_exclude_columns_at_any_temperature():
  # exp(25) ~ 7e10 and every candidate of BAS row 0 scores about -exp(25): an excluded column must
  # still lose against them (a fixed "very negative" logit such as -1e9 would not).
  embs = {"bas": np.array([E1, E2, E1, E2]),
          "ecg": np.array([[-1.0, 0.1], E1, [-1.0, -0.1], E2])}
  keep = np.array([0, 2, 3])
  masks = {"ecg": np.isin(np.arange(4), keep)}
  fn = jax.value_and_grad(lambda e: losses.contrastive_loss(e, masks, 25.0)[0])
  loss, grads = fn(_as_jnp(embs))
  sub, _ = losses.contrastive_loss({k: jnp.asarray(v[keep]) for k, v in embs.items()}, None, 25.0)
  assert float(loss) == pytest.approx(float(sub), rel=1e-5)
  assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())


@pytest.mark.parametrize("mode", losses.MODES)
def test_nothing_present_gives_zero_loss_and_gradients(mode):
  embs = _as_jnp(_random_case(4))
  masks = {k: jnp.zeros(6, bool) for k in embs}
  loss, (g_embs, g_t) = jax.value_and_grad(
      lambda e, t: losses.contrastive_loss(e, masks, t, mode=mode)[0], argnums=(0, 1)
  )(embs, jnp.float32(0.0))
  assert float(loss) == 0.0 and float(g_t) == 0.0
  assert all(not np.asarray(g).any() for g in g_embs.values())


def test_temperature_gradient_matches_finite_difference():
  embs = _random_case(5)
  masks = {"resp": np.array([1, 0, 1, 1, 0, 1], bool)}
  g = jax.grad(lambda t: losses.contrastive_loss(
      _as_jnp(embs), _as_jnp(masks), t, mode="leave_one_out")[0])(jnp.float32(0.8))
  h = 1e-4
  fd = (_reference(embs, masks, 0.8 + h, "leave_one_out")[0]
        - _reference(embs, masks, 0.8 - h, "leave_one_out")[0]) / (2 * h)
  assert float(g) == pytest.approx(fd, rel=1e-4)


def test_bfloat16_embeddings_are_scored_in_float32():
  embs = _as_jnp(_random_case(6))
  low = {k: v.astype(jnp.bfloat16) for k, v in embs.items()}
  up = {k: v.astype(jnp.float32) for k, v in low.items()}
  loss_low, _ = losses.contrastive_loss(low, None, 2.0)
  loss_up, _ = losses.contrastive_loss(up, None, 2.0)
  assert loss_low.dtype == jnp.float32 and float(loss_low) == float(loss_up)


def test_clamp_temperature():
  assert float(losses.clamp_temperature(jnp.float32(-0.3))) == 0.0
  assert float(losses.clamp_temperature(jnp.float32(0.3))) == pytest.approx(0.3)
  capped = losses.clamp_temperature(jnp.float32(9.0), hi=losses.TEMPERATURE_MAX_CLIP)
  assert float(jnp.exp(capped)) == pytest.approx(100.0, rel=1e-6)
  assert losses.TEMPERATURE_INIT_CLIP == pytest.approx(math.log(1 / 0.07))


def test_bad_inputs_are_rejected():
  embs = _as_jnp(_random_case(7))
  with pytest.raises(ValueError, match="unknown contrastive mode"):
    losses.contrastive_loss(embs, None, 0.0, mode="triplet")
  with pytest.raises(ValueError, match="mask of 'ecg'"):
    losses.contrastive_loss(embs, {"ecg": jnp.ones(5, bool)}, 0.0)
  with pytest.raises(ValueError, match="without embeddings"):
    losses.contrastive_loss(embs, {"eeg": jnp.ones(6, bool)}, 0.0)
  with pytest.raises(ValueError, match="one batch size"):
    losses.contrastive_loss({"bas": embs["bas"], "ecg": embs["ecg"][:5]}, None, 0.0)
  assert losses.term_names(("bas", "ecg", "resp"), "pairwise") == (
      "bas->ecg", "ecg->bas", "bas->resp", "resp->bas", "ecg->resp", "resp->ecg")
