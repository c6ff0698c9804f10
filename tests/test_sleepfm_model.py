"""SleepFM / SupervisedCNN assembly, and BatchNorm semantics under data parallelism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sleepfm_jax.models.effnet1d import EffNet1D, count_params
from sleepfm_jax.models.sleepfm import SleepFM, SupervisedCNN

TINY = dict(widths=(8, 8, 8, 16, 16, 16, 24, 24), depths=(1, 1, 1, 1, 1, 1, 1), head_width=32,
            embed_dim=16)


def _batch(rng, b, t, channels):
  batch = {m: jnp.asarray(rng.normal(size=(b, c, t)), jnp.float32) for m, c in channels.items()}
  batch["stage"] = jnp.zeros((b,), jnp.int8)  # other batch entries are ignored
  return batch


def test_sleepfm_has_one_encoder_per_present_modality():
  channels = {"bas": 2, "ecg": 0, "resp": 3}
  model = SleepFM(channels, rngs=nnx.Rngs(0), **TINY)
  assert model.modalities == ("bas", "resp")
  assert set(model.encoders) == {"bas", "resp"}
  assert model.encoders["resp"].in_channels == 3
  assert float(model.t[...]) == 0.0 and float(model.logit_scale) == 1.0
  n_enc = sum(count_params(model.encoders[m]) for m in model.modalities)
  assert count_params(model) == n_enc + 1  # + the temperature
  out = nnx.jit(lambda m, b: m(b, train=False))(model, _batch(np.random.default_rng(0), 3, 256,
                                                                 channels))
  assert set(out) == {"bas", "resp"}
  assert out["bas"].shape == (3, 16) and out["bas"].dtype == jnp.float32
  assert not np.allclose(out["bas"], out["resp"])


def test_pooled_features_are_what_the_final_layer_maps_to_the_embedding():
  channels = {"bas": 2, "ecg": 1, "resp": 3}
  model = SleepFM(channels, rngs=nnx.Rngs(0), **TINY)
  batch = _batch(np.random.default_rng(1), 4, 256, channels)
  emb = model(batch, train=False)
  pooled = model(batch, train=False, features="pooled")
  for m in channels:
    assert pooled[m].shape == (4, 32) and pooled[m].dtype == jnp.float32  # head_width
    assert np.all(np.asarray(pooled[m]) >= 0)  # after the ReLU
    np.testing.assert_allclose(model.encoders[m].fc(pooled[m]), emb[m], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="features"):
    model(batch, train=False, features="head")


def test_sleepfm_rejects_bad_montages_and_batches():
  with pytest.raises(ValueError, match="unknown modalities"):
    SleepFM({"eeg": 2}, rngs=nnx.Rngs(0), **TINY)
  with pytest.raises(ValueError, match="no modality has channels"):
    SleepFM({"bas": 0}, rngs=nnx.Rngs(0), **TINY)
  model = nnx.eval_shape(lambda: SleepFM({"bas": 1, "ecg": 1}, temperature_init=0.5,
                                         rngs=nnx.Rngs(0), **TINY))
  with pytest.raises(KeyError, match="ecg"):
    model({"bas": jnp.zeros((2, 1, 256))}, train=False)


def test_supervised_cnn_concatenates_pooled_features():
  channels = {"bas": 2, "ecg": 1}
  model = nnx.eval_shape(lambda: SupervisedCNN(channels, num_classes=4, rngs=nnx.Rngs(0), **TINY))
  assert all(model.encoders[m].fc is None for m in model.modalities)
  assert model.fc.kernel.shape == (2 * 32, 4)
  batch = {m: jax.ShapeDtypeStruct((3, c, 256), jnp.float32) for m, c in channels.items()}
  logits = jax.eval_shape(
      lambda b: SupervisedCNN(channels, num_classes=4, rngs=nnx.Rngs(0), **TINY)(b, train=False),
      batch)
  assert logits.shape == (3, 4)
  # With one modality it is the original EffNetSupervised: the encoder with a 1280 -> 5 head.
  single = nnx.eval_shape(lambda: SupervisedCNN({"ecg": 1}, rngs=nnx.Rngs(0)))
  full = nnx.eval_shape(lambda: EffNet1D(1, rngs=nnx.Rngs(0), embed_dim=5))
  assert count_params(single) == count_params(full)


def test_batchnorm_under_jit_over_a_sharded_batch_uses_global_statistics():
  """jit over an 8-way batch-sharded input == single-device full batch (synchronised BN).

  PyTorch DataParallel would instead normalise each replica's slice with its own statistics;
  that per-shard result is computed too and must differ.
  """
  assert jax.device_count() >= 8, "tests/conftest.py sets 8 host devices"
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  model = EffNet1D(2, rngs=nnx.Rngs(0), dropout=0.0, widths=(8, 8, 16), depths=(2, 1),
                   pool_after=(0,), head_width=16, embed_dim=8)
  graphdef, state = nnx.split(model)
  # (rng(0)'s input lies within 1e-7 of a ReLU6/max-pool kink, where summation order alone flips
  # gradients: see test_float32_train_gradients_match_float64.)
  rng = np.random.default_rng(1)
  # A per-shard offset makes per-shard and global statistics clearly different.
  x = rng.normal(size=(16, 2, 128)) + np.repeat(np.arange(8), 2)[:, None, None]
  x = jnp.asarray(x, jnp.float32)

  @jax.jit
  def forward(state, x):
    """Train-mode embeddings, updated BN statistics, and parameter gradients of sum(y^2)."""
    m = nnx.merge(graphdef, state)

    def loss(m):
      y = m(x, train=True)
      return jnp.sum(y ** 2), y

    (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(m)
    return y, nnx.state(m, nnx.BatchStat), grads

  y_single, stats_single, grads_single = forward(state, x)
  x_sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
  state_repl = jax.device_put(state, NamedSharding(mesh, P()))
  y_sharded, stats_sharded, grads_sharded = forward(state_repl, x_sharded)
  assert len(y_sharded.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(y_sharded), np.asarray(y_single), rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree.leaves(stats_sharded), jax.tree.leaves(stats_single), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  # The custom VJPs (BN, pointwise conv) give the global-batch gradient under sharding too.
  # (Conv biases feeding a train-mode BN have a true gradient of 0: rounding noise there, hence
  # a floor relative to the largest gradient.)
  g_single = [np.asarray(b) for b in jax.tree.leaves(grads_single)]
  floor = 1e-5 * max(np.abs(b).max() for b in g_single)
  for a, b in zip(jax.tree.leaves(grads_sharded), g_single, strict=True):
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-3, atol=floor)

  # Per-replica statistics (DataParallel): each 2-window shard normalised on its own.
  per_shard = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, train=True))
  y_per_shard = np.concatenate([np.asarray(per_shard(state, x[i:i + 2]))
                                for i in range(0, 16, 2)])
  assert np.abs(y_per_shard - np.asarray(y_single)).max() > 1e-2
