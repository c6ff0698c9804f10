"""The pretraining state and its jitted steps.

`init_state` builds the model and its optimizer as replicated global arrays; `make_steps` returns
the jitted update (state donated) and the validation step; `pure_trees` / `restore` convert the
state to and from the pure dicts that `checkpointing` saves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from sleepfm_jax.models.sleepfm import SleepFM
from sleepfm_jax.training import losses, sharding
from sleepfm_jax.training.factories import build_model


def init_state(config: ml_collections.ConfigDict, in_channels: Mapping[str, int],
               mesh: jax.sharding.Mesh, tx: optax.GradientTransformation):
  """The model and its optimizer as replicated global arrays over `mesh`.

  Returns `(graphdef, state, state_sharding)`; `state` is `nnx.state((model, optimizer))`, the
  argument `make_steps`' train step takes (and donates). Initialised eagerly from the seed
  (identical on every process; jit-compiling the random init of three encoders takes minutes on
  CPU), then laid out as replicated global arrays.
  """
  model = build_model(config, in_channels, config.seed)
  graphdef, state = nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))
  state = sharding.replicate(state, mesh)
  replicated = sharding.replicated(mesh)
  return graphdef, state, jax.tree.map(lambda _: replicated, state)


def contrastive_loss(model: SleepFM, batch: Mapping[str, jax.Array], *, mode: str,
                     renormalise: bool, mesh: jax.sharding.Mesh, train: bool):
  embs = model({m: batch[m] for m in model.modalities}, train=train)
  present = {m: batch[f"present_{m}"] for m in model.modalities}
  return losses.gathered_loss(embs, present, model.t[...], mesh=mesh, mode=mode,
                              renormalise_rest=renormalise)


def make_steps(graphdef, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
               state_sharding, batch_sharding):
  """Returns jitted (train_step, eval_step) closed over the static pieces."""
  loss_fn = functools.partial(contrastive_loss, mode=config.loss.mode,
                              renormalise=config.loss.renormalise_rest, mesh=mesh)
  t_lo, t_hi = config.loss.temperature_min, config.loss.temperature_max
  dropout_seed = int(config.seed) + 2

  def train_step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    # Dropout noise is a pure function of (seed, update count): resumed runs replay it exactly.
    # The key is made inside the trace from a Python int: a key array closed over would be a
    # device constant that lowering copies to the host, which the loop's transfer guard refuses
    # on GPU (not on CPU, where it costs no copy).
    dropout_key = jax.random.key(dropout_seed)
    nnx.reseed(model, dropout=jax.random.fold_in(dropout_key, optimizer.step[...]))

    def objective(model):
      return loss_fn(model, batch, train=True)

    (loss, metrics), grads = nnx.value_and_grad(objective, has_aux=True)(model)
    optimizer.update(model, grads)
    model.t[...] = losses.clamp_temperature(model.t[...], t_lo, t_hi)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   temperature=model.t[...])
    return nnx.state((model, optimizer)), metrics

  def eval_step(state, batch):
    model, _ = nnx.merge(graphdef, state)
    loss, metrics = loss_fn(model, batch, train=False)
    return dict(metrics, loss=loss, count=jnp.sum(batch["valid"].astype(jnp.int32)))

  train_step = jax.jit(train_step, in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, None), donate_argnums=(0,))
  eval_step = jax.jit(eval_step, in_shardings=(state_sharding, batch_sharding))
  return train_step, eval_step


def pure_trees(graphdef, state):
  """(model, optimizer) state as pure dicts of arrays, without RNG streams."""
  model, optimizer = nnx.merge(graphdef, state)
  return (nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState))),
          nnx.to_pure_dict(nnx.state(optimizer, nnx.Not(nnx.RngState))))


def restore(ckpt, step, graphdef, state, state_sharding, data_iter):
  """Restores model, optimizer and data iterator from checkpoint `step`; returns sharded state."""
  model, optimizer = nnx.merge(graphdef, state)
  no_rng = nnx.Not(nnx.RngState)
  model_state, opt_state = nnx.state(model, no_rng), nnx.state(optimizer, no_rng)
  replicated = jax.tree.leaves(state_sharding)[0]
  out = ckpt.restore(step, model=nnx.to_pure_dict(model_state),
                     optimizer=nnx.to_pure_dict(opt_state), data_iter=data_iter,
                     sharding=replicated)
  nnx.replace_by_pure_dict(model_state, out["model"])
  nnx.replace_by_pure_dict(opt_state, out["optimizer"])
  nnx.update(model, model_state)
  nnx.update(optimizer, opt_state)
  # Restored arrays already carry the replicated sharding; RNG streams are reseeded every step.
  return nnx.state((model, optimizer))
