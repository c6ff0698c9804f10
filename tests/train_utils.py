"""Helpers shared by the trainer tests: tiny stores and tiny-model configs."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from sleepfm_jax.configs import pretrain as pretrain_configs

REPO = pathlib.Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "experiments" / "pretrain.py"

# Small enough to compile in seconds on 2 CPU cores, deep enough to keep every stage of EffNet-1D.
TINY_MODEL = dict(widths=(8,) * 8, depths=(1,) * 7, head_width=32, embed_dim=16, dropout=0.1)


def tiny_config(store: str, preset: str = "sleepedf", **overrides):
  """A pretraining config for fast tests: tiny model, few steps, frequent logs/evals/checkpoints."""
  c = pretrain_configs.get_config(preset)
  c.data.store = str(store)
  for k, v in TINY_MODEL.items():
    setattr(c.model, k, v)
  c.batch_size = 16
  c.total_steps = 8
  c.log_every = 1
  c.eval_every = 4
  c.eval_max_batches = 2
  c.checkpoint_every = 4
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"  # independent of total_steps, so runs share compiled steps
  c.optim.lr = 3e-3
  c.async_checkpointing = False
  c.num_devices = 1  # bitwise-comparable runs in-process (8 simulated devices) and in subprocesses
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = getattr(node, p)
    setattr(node, last, value)
  return c


CLI_KEYS = ("batch_size", "total_steps", "stop_at_step", "log_every", "eval_every",
            "eval_max_batches", "checkpoint_every", "async_checkpointing", "num_devices",
            "model.widths", "model.depths", "model.head_width", "model.embed_dim", "model.dropout",
            "optim.name", "optim.lr", "optim.weight_decay", "optim.warmup_steps", "optim.schedule")


def cli_args(config, workdir) -> list[str]:
  """`experiments/pretrain.py` flags that rebuild `config` (a `tiny_config`) in a subprocess."""
  args = [f"--config={config.preset}",
          f"--config.data.store={config.data.store}", f"--workdir={workdir}"]
  for key in CLI_KEYS:
    node = config
    for part in key.split("."):
      node = node[part]
    value = node if isinstance(node, str) else repr(node).replace(" ", "")
    args.append(f"--config.{key}={value}")
  return args


def read_metrics(workdir: str | os.PathLike, split: str = "train") -> dict[int, dict]:
  """step -> metrics row of `split` from a run's metrics.jsonl."""
  rows = {}
  with open(pathlib.Path(workdir) / "metrics.jsonl") as f:
    for line in f:
      r = json.loads(line)
      if r["split"] == split:
        rows[r["step"]] = r
  return rows


def losses_by_step(workdir) -> dict[int, float]:
  return {s: r["loss"] for s, r in read_metrics(workdir).items()}


def assert_same_losses(a: dict[int, float], b: dict[int, float], steps, rtol=0.0):
  got = np.array([b[s] for s in steps])
  want = np.array([a[s] for s in steps])
  np.testing.assert_allclose(got, want, rtol=rtol, atol=0.0 if rtol == 0.0 else 1e-7)
