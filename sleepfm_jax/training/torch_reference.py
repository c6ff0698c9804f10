"""A PyTorch EffNet-1D, written from the architecture description, for parity and benchmarks.

This is *not* part of the JAX model: it exists so that tests can check that
`sleepfm_jax.models.effnet1d.EffNet1D` computes what the original SleepFM encoder computes, and
so that benchmarks can compare the two frameworks on the same architecture. Its module and
attribute names reproduce the original's, so that `state_dict()` keys are exactly those found in
the original checkpoints (`respiratory_state_dict`, `sleep_stages_state_dict`, `ekg_state_dict`):

  stage1.{weight,bias}                 stem Conv1d(in, 32, k=3, stride=2, padding=1)
  b0.{weight,bias,running_mean,running_var,num_batches_tracked}
  stage{2..8}.stack.s{j}.conv1|conv2|conv3.{weight,bias}, .b0|b1.{...}   bottlenecks
  stage{2..8}.bn.{...}                 the BN closing each MBConv stage
  stage9.{weight,bias}                 Conv1d(320, 1280, k=1)
  fc.{weight,bias}                     Linear(1280, 512)

The bottlenecks of a stage of depth `d` are named `s0 .. s{d-2}` (stride 1, residual) and then
`s{d+1}` for the stride-2 bottleneck (the original's naming, kept for key compatibility).

torch is optional: importing this module does not import it; `build_effnet` does, and raises
an ImportError with an install hint when torch is missing.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sleepfm_jax.models.effnet1d import DEPTHS, EMBED_DIM, EXPANSION, HEAD_WIDTH, WIDTHS


def import_torch():
  """Imports torch, with a clear message when it is not installed."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "this feature needs PyTorch (CPU is enough): pip install torch==2.13.0") from e
  return torch


def stage_block_names(depth: int) -> list[str]:
  """Names of the bottlenecks in one original MBConv stage of `depth` blocks."""
  return [f"s{j}" for j in range(depth - 1)] + [f"s{depth + 1}"]


@functools.cache
def _classes() -> dict[str, Any]:
  """Defines the torch modules on first use (their base class needs torch)."""
  torch = import_torch()
  nn = torch.nn

  class Bottleneck(nn.Module):
    """1x1 expand -> BN -> ReLU6 -> depthwise k3 -> BN -> ReLU6 -> 1x1 project (+ residual)."""

    def __init__(self, cin: int, cout: int, expansion: int, stride: int = 1):
      super().__init__()
      hidden = cin * expansion
      self.stride = stride
      self.conv1 = nn.Conv1d(cin, hidden, kernel_size=1)
      self.conv2 = nn.Conv1d(hidden, hidden, kernel_size=3, stride=stride, padding=1,
                             groups=hidden)
      self.conv3 = nn.Conv1d(hidden, cout, kernel_size=1)
      self.b0 = nn.BatchNorm1d(hidden)
      self.b1 = nn.BatchNorm1d(hidden)
      self.d = nn.Dropout(0.5)
      self.act = nn.ReLU6()

    def forward(self, x):
      y = self.act(self.b0(self.conv1(x)))
      y = self.act(self.b1(self.conv2(y)))
      y = self.conv3(y)
      if self.stride == 1:
        y = x + self.d(y)
      return y

  class MBConv(nn.Module):
    """`depth - 1` residual bottlenecks, one stride-2 bottleneck, then BN."""

    def __init__(self, cin: int, cout: int, expansion: int, depth: int):
      super().__init__()
      names = stage_block_names(depth)
      blocks = [(n, Bottleneck(cin, cin, expansion)) for n in names[:-1]]
      blocks.append((names[-1], Bottleneck(cin, cout, expansion, stride=2)))
      self.stack = nn.Sequential(OrderedDict(blocks))
      self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
      return self.bn(self.stack(x))

  class EffNet(nn.Module):
    """The SleepFM encoder; `[N, C, T]` -> `[N, embed_dim]`."""

    def __init__(self, in_channel: int, widths: Sequence[int], depths: Sequence[int],
                 head_width: int, embed_dim: int, expansion: int):
      super().__init__()
      self.n_stages = len(depths)
      self.stage1 = nn.Conv1d(in_channel, widths[0], kernel_size=3, stride=2, padding=1)
      self.b0 = nn.BatchNorm1d(widths[0])
      for i, depth in enumerate(depths):
        setattr(self, f"stage{i + 2}", MBConv(widths[i], widths[i + 1], expansion, depth))
      self.Pool = nn.MaxPool1d(3, stride=1, padding=1)  # pylint: disable=invalid-name
      setattr(self, f"stage{len(depths) + 2}", nn.Conv1d(widths[-1], head_width, 1))
      self.AAP = nn.AdaptiveAvgPool1d(1)  # pylint: disable=invalid-name
      self.act = nn.ReLU()
      self.drop = nn.Dropout(0.5)
      self.fc = nn.Linear(head_width, embed_dim)

    def forward(self, x):
      x = self.b0(self.stage1(x))
      for i in range(self.n_stages):
        x = getattr(self, f"stage{i + 2}")(x)
        if i in (1, 4):  # after the original's stage3 and stage6
          x = self.Pool(x)
      x = getattr(self, f"stage{self.n_stages + 2}")(x)
      x = self.act(self.AAP(x)[:, :, 0])
      return self.fc(self.drop(x))

  return {"Bottleneck": Bottleneck, "MBConv": MBConv, "EffNet": EffNet}


def build_effnet(
    in_channels: int,
    *,
    widths: Sequence[int] = WIDTHS,
    depths: Sequence[int] = DEPTHS,
    head_width: int = HEAD_WIDTH,
    embed_dim: int = EMBED_DIM,
    expansion: int = EXPANSION,
):
  """Returns a freshly initialised PyTorch EffNet-1D (train mode, float32, CPU)."""
  return _classes()["EffNet"](in_channels, tuple(widths), tuple(depths), head_width,
                              embed_dim, expansion)


def randomise_batch_stats(model, seed: int = 0) -> None:
  """Fills every BN layer's running mean/var and affine parameters with random values.

  Fresh BN layers have mean 0, var 1, scale 1, bias 0, which would let a converter that
  mixes them up pass a parity test; random values cannot.
  """
  torch = import_torch()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm1d):
        n = module.num_features
        module.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
        module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
        module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        module.bias.copy_(torch.randn(n, generator=gen) * 0.2)


def calibrate_batch_stats(model, *xs) -> None:
  """Sets every BN layer's running statistics to the average of their statistics over train-mode
  forward passes on `xs` (one: that batch's statistics).

  Uses PyTorch's cumulative averaging (`momentum=None`) for the forward passes, without
  gradients, then restores each layer's momentum and the model's train/eval mode.
  """
  torch = import_torch()
  bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
  momenta = [bn.momentum for bn in bns]
  was_training = model.training
  for bn in bns:
    bn.reset_running_stats()
    bn.momentum = None
  model.train()
  with torch.no_grad():
    for x in xs:
      model(x)
  for bn, momentum in zip(bns, momenta, strict=True):
    bn.momentum = momentum
  model.train(was_training)
