"""EffNet-1D: the per-modality 1-D CNN encoder of SleepFM, in Flax NNX.

The architecture follows the original SleepFM encoder (an EfficientNet-style 1-D CNN):

  stem conv (k=3, stride 2, pad 1) -> BN                                  (no activation)
  7 MBConv stages (widths 16/24/40/80/112/192/320, depths 1/2/2/3/3/3/3, expansion 6):
      (depth - 1) residual bottlenecks (stride 1, width kept) then one stride-2 bottleneck
      that changes the width; a BN closes every stage.
      bottleneck: 1x1 expand -> BN -> ReLU6 -> depthwise k=3 -> BN -> ReLU6 -> 1x1 project
      (+ Dropout(0.5) and the identity shortcut in the stride-1 bottlenecks)
  max-pool (k=3, stride 1, pad 1) after the 2nd and the 5th MBConv stage
  1x1 conv to 1280 -> global average pool -> ReLU -> Dropout(0.5) -> Linear 1280 -> 512

Every convolution has a bias, as in the original. Padding is symmetric (PyTorch's `padding=1`),
which is not what `'SAME'` does for stride 2: `'SAME'` would pad (0, 1) and shift every
downsampled sample by one input sample.

Internally activations are `[batch, time, channels]` (NWC): 1x1 convolutions are then plain
matrix products over the last axis, which XLA lowers to its fastest GEMM kernels, and the
depthwise k=3 convolution is a sum of three shifted, scaled copies (elementwise work that XLA
fuses with its neighbours). The public `__call__` takes `[batch, channels, samples]`, the store's layout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array
DType = Any

WIDTHS = (32, 16, 24, 40, 80, 112, 192, 320)  # stem, then the 7 MBConv stages
DEPTHS = (1, 2, 2, 3, 3, 3, 3)
HEAD_WIDTH = 1280
EMBED_DIM = 512
EXPANSION = 6
POOL_AFTER = (1, 4)  # 0-based MBConv stage indices followed by the k=3/s=1 max-pool
DROPOUT = 0.5
BN_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch
BN_EPSILON = 1e-5


_INIT_CHUNK = 8192


@jax.jit
def _uniform_chunk(key: Array, index: Array) -> Array:
  return jax.random.uniform(jax.random.fold_in(key, index), (_INIT_CHUNK,), jnp.float32)


def _uniform(key: Array, shape: Sequence[int], dtype: DType, bound: float) -> Array:
  """U(-bound, bound) of `shape`, drawn in fixed-size chunks.

  `jax.random.uniform` compiles one kernel per distinct shape, and EffNet-1D has about a hundred
  distinct parameter shapes: drawing each directly made building the model take tens of seconds
  on CPU. Here one compiled kernel of fixed size serves every shape. The values are the same
  whether the key is concrete or traced (e.g. under `nnx.eval_shape` or `jax.jit`).
  """
  n = math.prod(shape)
  chunks = [_uniform_chunk(key, i) for i in range(-(-n // _INIT_CHUNK))]
  if isinstance(key, jax.core.Tracer):
    flat = jnp.concatenate(chunks)[:n]
    return ((2.0 * flat - 1.0) * bound).reshape(shape).astype(dtype)
  # Eager: finish on the host, as every eager jnp op would compile once more per shape.
  flat = np.concatenate([np.asarray(c) for c in chunks])[:n]
  return jnp.asarray(((2.0 * flat - 1.0) * bound).reshape(shape).astype(dtype))


def torch_default_init(fan_in: int) -> nnx.Initializer:
  """PyTorch's default Conv/Linear initialiser: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  Used for weights and biases alike, so that a model trained from scratch starts where the
  original's did.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return _uniform(key, shape, dtype, bound)

  return init


@jax.custom_vjp
def pointwise(x: Array, w: Array) -> Array:
  """`x @ w` over the last axis of `x` (`[..., C] x [C, H]`), with a layout-aware backward.

  The weight gradient contracts over every token (`x^T dy`). XLA:CPU's dot wants the
  contracting axis of its second operand minor, so whichever activation comes second gets
  transposed in memory, a slow strided copy on large activations. Here the narrower of `x` and
  `dy` is always the second operand, so only the smaller array is transposed.
  """
  return jnp.einsum("...c,ch->...h", x, w)


def _pointwise_fwd(x, w):
  return pointwise(x, w), (x, w)


def _pointwise_bwd(res, dy):
  x, w = res
  c, h = w.shape
  x2, dy2 = x.reshape(-1, c), dy.reshape(-1, h)
  dx = jnp.einsum("...h,ch->...c", dy, w)
  f32 = jnp.float32  # accumulate the token sum in float32 even for bfloat16 activations
  if c <= h:
    dw = jnp.einsum("nh,nc->hc", dy2, x2, preferred_element_type=f32).T
  else:
    dw = jnp.einsum("nc,nh->ch", x2, dy2, preferred_element_type=f32)
  return dx, dw.astype(w.dtype)


pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _broadcast_cast(param: Array, shape: Sequence[int], dtype: DType) -> Array:
  """`param` (a per-channel vector) broadcast to the activations' `shape`, then cast to `dtype`.

  Broadcasting before the cast matters for the backward pass in bfloat16: the gradient of a
  broadcast parameter is a sum over every batch and time position. Cast first and broadcast
  second, that sum runs in bfloat16 (XLA transposes the broadcast in the activations' dtype),
  and an 8-bit mantissa cannot hold a running sum of tens of thousands of terms: a bias fed
  32 x 960 ones got 7680 instead of 30720. Broadcast first, and the sum runs in the parameter's
  float32 (tests/test_effnet1d.py).
  """
  return jnp.broadcast_to(param, shape).astype(dtype)


class Conv1d(nnx.Module):
  """1-D convolution on NWC activations with PyTorch's symmetric zero padding.

  The kernel is stored as `[kernel_size, in_features // groups, out_features]` (Flax's WIO
  layout) and the bias as `[out_features]`. Dense (`groups=1`) and depthwise
  (`groups == in_features == out_features`) convolutions are supported, lowered to what XLA
  compiles best on CPU (both far faster there than `lax.conv_general_dilated`, whose grouped
  form was 6x slower for this model):
  * dense: the `kernel_size` taps (strided slices of the padded input) side by side, then one
    matrix product (`pointwise`); for kernel 1 just the matrix product;
  * depthwise: `sum_k w[k] * tap_k`, elementwise.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int,
      *,
      stride: int = 1,
      padding: int = 0,
      groups: int = 1,
      dtype: DType = jnp.float32,
      param_dtype: DType = jnp.float32,
      rngs: nnx.Rngs,
  ):
    if groups != 1 and not groups == in_features == out_features:
      raise ValueError(f"only dense (groups=1) and depthwise convolutions are supported, got "
                       f"groups={groups} for {in_features} -> {out_features} channels")
    self.in_features = in_features
    self.out_features = out_features
    self.kernel_size = kernel_size
    self.stride = stride
    self.padding = padding
    self.depthwise = groups != 1
    self.dtype = dtype
    fan_in = (in_features // groups) * kernel_size
    init = torch_default_init(fan_in)
    self.kernel = nnx.Param(
        init(rngs.params(), (kernel_size, in_features // groups, out_features), param_dtype))
    self.bias = nnx.Param(init(rngs.params(), (out_features,), param_dtype))

  def _taps(self, x: Array) -> list[Array]:
    """The inputs seen by each kernel tap: `x_pad[:, stride * t + j]` for j < kernel_size."""
    k, s, p = self.kernel_size, self.stride, self.padding
    xp = jnp.pad(x, ((0, 0), (p, p), (0, 0))) if p else x
    n_out = (xp.shape[1] - k) // s + 1
    if n_out < 1:
      raise ValueError(f"input of length {x.shape[1]} is too short for kernel {k}, pad {p}")
    return [jax.lax.slice_in_dim(xp, j, j + s * (n_out - 1) + 1, stride=s, axis=1)
            for j in range(k)]

  def __call__(self, x: Array) -> Array:
    x = x.astype(self.dtype)
    if self.depthwise:
      taps = self._taps(x)
      y = _broadcast_cast(self.bias[...], taps[0].shape, self.dtype)
      for j, tap in enumerate(taps):
        y = y + tap * _broadcast_cast(self.kernel[j, 0], tap.shape, self.dtype)
      return y
    kernel = self.kernel[...].astype(self.dtype)
    if self.kernel_size == 1 and self.stride == 1 and self.padding == 0:
      y = pointwise(x, kernel[0])
    else:
      patches = jnp.concatenate(self._taps(x), axis=-1)  # [B, T', k * C_in], tap-major
      y = pointwise(patches, kernel.reshape(-1, self.out_features))
    return y + _broadcast_cast(self.bias[...], y.shape, self.dtype)


def _bn_statistics(x: Array, axes: tuple[int, ...] | None = None,
                   keepdims: bool = False) -> tuple[Array, Array]:
  """Mean and biased variance of `x` over `axes` (default: all but the last, i.e. per channel),
  in float32. Shared by `BatchNorm1d` and `GroupNorm1d`.

  Two passes (the mean, then the mean squared deviation). A one-pass form (sums of `x - shift`
  and its square) was tried and dropped: its variance error, though invisible in the forward
  output, made float32 gradients of stacked BN layers wrong by up to 1 % (measured against a
  float64 reference), because the closed-form backward assumes the exact batch statistics.
  """
  if axes is None:
    axes = tuple(range(x.ndim - 1))
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=keepdims)
  return (mean if keepdims else jnp.squeeze(mean, axes)), var


def _affine(x: Array, a: Array, b: Array) -> Array:
  """`x * a + b` computed in float32 and rounded once to `x`'s dtype.

  In bfloat16, `x * a` and `b = bias - mean * a` are each rounded to 8 bits before they are
  added; where a channel's mean is large against its spread, the two nearly cancel and the
  result keeps only the rounding error of the larger terms (with mean / std = 50, an error of
  about 0.1 in normalised units). In float32 the sum is exact to float32 and only the output is
  rounded. On accelerators the multiply-add fuses with the casts (no extra memory traffic); in
  float32 compute it is the same arithmetic as before.
  """
  return (x.astype(jnp.float32) * a + b).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x: Array, scale: Array, bias: Array, epsilon: float):
  """Train-mode batch norm over the last axis: returns `(y, batch_mean, batch_var)`.

  `batch_mean` and `batch_var` (biased) are meant for the running statistics only: the
  backward pass treats them as constants. The backward is the closed-form BN gradient, two
  passes over the activations (one fused reduction, one elementwise), fewer than autodiff of
  the forward would take.
  """
  return _batch_norm_train_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon):
  mean, var = _bn_statistics(x)
  rstd = jax.lax.rsqrt(var + epsilon)
  a = scale.astype(jnp.float32) * rstd
  b = bias.astype(jnp.float32) - mean * a
  y = _affine(x, a, b)
  return (y, mean, var), (x, scale, mean, rstd)


def _batch_norm_train_bwd(epsilon, res, cts):
  del epsilon
  x, scale, mean, rstd = res
  dy = cts[0].astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  xhat = (x.astype(jnp.float32) - mean) * rstd
  sum_dy = jnp.sum(dy, axis=axes)
  sum_dy_xhat = jnp.sum(dy * xhat, axis=axes)
  n = math.prod(x.shape[:-1])
  g = scale.astype(jnp.float32) * rstd
  dx = g * (dy - (sum_dy + xhat * sum_dy_xhat) / n)
  return dx.astype(x.dtype), sum_dy_xhat.astype(scale.dtype), sum_dy.astype(scale.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def _scale_and_bias(num_features: int, param_dtype: DType) -> tuple[nnx.Param, nnx.Param]:
  """A normalisation layer's per-channel affine parameters: scale 1, bias 0."""
  # Built with numpy: eager jnp.ones/zeros would compile once per distinct width.
  return (nnx.Param(jnp.asarray(np.ones((num_features,), np.float32), param_dtype)),
          nnx.Param(jnp.asarray(np.zeros((num_features,), np.float32), param_dtype)))


class BatchNorm1d(nnx.Module):
  """Batch normalisation over the channel (last) axis, with PyTorch's semantics.

  * Train mode normalises with the statistics of the batch (biased variance) and updates the
    running statistics as `running = (1 - momentum) * running + momentum * batch`, using the
    *unbiased* batch variance for `running_var` as PyTorch does.
  * Statistics are reduced over every axis but the last. Under `jax.jit` with the batch sharded
    across devices this is a reduction over the *global* batch (synchronised BN); PyTorch's
    DataParallel computes them per replica instead. See docs/model.md.
  * Statistics are computed in float32 whatever the compute dtype, in two passes
    (mean, then mean squared deviation), which stays accurate for un-normalised signals with a
    large offset (e.g. SpO2 around 95 %, or about 29,500 in the raw CinC-2018 counts the
    original fed).

  Parameters `scale`, `bias` (nnx.Param) and running `mean`, `var` (nnx.BatchStat).
  """

  def __init__(
      self,
      num_features: int,
      *,
      momentum: float = BN_MOMENTUM,
      epsilon: float = BN_EPSILON,
      dtype: DType = jnp.float32,
      param_dtype: DType = jnp.float32,
  ):
    self.momentum = momentum
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale, self.bias = _scale_and_bias(num_features, param_dtype)
    self.mean = nnx.BatchStat(jnp.asarray(np.zeros((num_features,), np.float32)))
    self.var = nnx.BatchStat(jnp.asarray(np.ones((num_features,), np.float32)))

  def __call__(self, x: Array, *, train: bool) -> Array:
    if train:
      y, mean, var = batch_norm_train(x, self.scale[...], self.bias[...], self.epsilon)
      n = math.prod(x.shape[:-1])
      m = self.momentum
      unbiased = var * (n / max(n - 1, 1))
      self.mean[...] = (1.0 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
      self.var[...] = (1.0 - m) * self.var[...] + m * jax.lax.stop_gradient(unbiased)
      return y
    # Eval: folded affine y = x * a + b, one fused multiply-add per element.
    a = self.scale[...].astype(jnp.float32) * jax.lax.rsqrt(self.var[...] + self.epsilon)
    b = self.bias[...].astype(jnp.float32) - self.mean[...] * a
    return _affine(x.astype(self.dtype), a, b)


class GroupNorm1d(nnx.Module):
  """Group normalisation over the channel (last) axis, with PyTorch's `nn.GroupNorm` semantics.

  The channels are split into `groups` contiguous groups; each sample is normalised with the
  mean and biased variance of its own group (over time and the group's channels), then scaled
  and shifted per channel. Nothing depends on the other samples of the batch, so train and eval
  are the same computation and there are no running statistics. Statistics are float32 (two
  passes, as `BatchNorm1d`'s), the output is rounded once to the compute dtype.
  """

  def __init__(
      self,
      num_features: int,
      *,
      groups: int,
      epsilon: float = BN_EPSILON,
      dtype: DType = jnp.float32,
      param_dtype: DType = jnp.float32,
  ):
    if groups < 1 or num_features % groups:
      raise ValueError(f"GroupNorm: {num_features} channels do not split into {groups} groups")
    self.groups = groups
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale, self.bias = _scale_and_bias(num_features, param_dtype)

  def __call__(self, x: Array, *, train: bool) -> Array:
    del train  # per-sample statistics: the same in train and eval
    shape = x.shape
    xf = x.astype(jnp.float32).reshape(shape[:-1] + (self.groups, shape[-1] // self.groups))
    axes = tuple(range(1, xf.ndim - 2)) + (xf.ndim - 1,)  # time (and any middle axes), channels
    mean, var = _bn_statistics(xf, axes, keepdims=True)
    y = ((xf - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(shape)
    return (y * self.scale[...].astype(jnp.float32)
            + self.bias[...].astype(jnp.float32)).astype(self.dtype)


def parse_norm(norm: str) -> int:
  """Groups of a `norm` setting: "batch" -> 0 (BatchNorm), "group:G" -> G (GroupNorm)."""
  head, _, groups = norm.partition(":")
  if norm == "batch":
    return 0
  if head == "group" and groups.isdigit() and int(groups) >= 1:
    return int(groups)
  raise ValueError(f"norm must be 'batch' or 'group:G' with G >= 1, got {norm!r}")


def make_norm(num_features: int, norm: str = "batch", **kw) -> nnx.Module:
  """The normalisation layer of a `norm` setting (`parse_norm`) over `num_features` channels."""
  groups = parse_norm(norm)
  if groups == 0:
    return BatchNorm1d(num_features, **kw)
  return GroupNorm1d(num_features, groups=groups, **kw)


class Bottleneck(nnx.Module):
  """Inverted-residual bottleneck: expand (1x1) -> depthwise k=3 -> project (1x1).

  With stride 1 (always width-preserving in EffNet-1D) the projection is followed by dropout
  and added to the input; the stride-2 bottleneck that ends each stage has neither.
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      expansion: int,
      stride: int,
      dropout: float,
      norm: str = "batch",
      dtype: DType,
      param_dtype: DType,
      rngs: nnx.Rngs,
  ):
    hidden = in_features * expansion
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.residual = stride == 1 and in_features == out_features
    self.expand = Conv1d(in_features, hidden, 1, rngs=rngs, **kw)
    self.expand_bn = make_norm(hidden, norm, **kw)
    self.depthwise = Conv1d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden,
                            rngs=rngs, **kw)
    self.depthwise_bn = make_norm(hidden, norm, **kw)
    self.project = Conv1d(hidden, out_features, 1, rngs=rngs, **kw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if self.residual else None

  def __call__(self, x: Array, *, train: bool) -> Array:
    y = jax.nn.relu6(self.expand_bn(self.expand(x), train=train))
    y = jax.nn.relu6(self.depthwise_bn(self.depthwise(y), train=train))
    y = self.project(y)
    if self.residual:
      y = x + self.dropout(y, deterministic=not train)
    return y


def _call_block(block: nnx.Module, x: Array, train: bool) -> Array:
  return block(x, train=train)


def _zero_cotangent(x: Array) -> Array:
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(x.shape, jax.dtypes.float0)


def _recompute_in_backward(fn):
  """`fn(params, rest, x) -> (y, new_rest)` that keeps only its inputs for the backward pass.

  The backward pass recomputes `fn` from the kept inputs, then back-propagates through it.
  `jax.checkpoint` (`nnx.remat`) does the same but saved nothing on XLA:CPU: the compiler drops
  its optimisation barriers before common-subexpression elimination, which merges the
  recomputation with the forward pass, so the step's temporaries did not change
  (docs/performance.md, "Memory"). Here the recomputed input is `x + 0 * dy[0]`: a different
  expression (XLA does not fold `0 * a` for floats, since `a` could be NaN), which cannot run
  before the backward pass reaches this block. A NaN or infinite `dy[0]` makes this block's
  gradients NaN, as they would be anyway.

  `rest` (BN running statistics, dropout key and counter) is not differentiated; the forward is
  recomputed from the same `rest`, so dropout draws the same mask.
  """

  @jax.custom_vjp
  def call(params, rest, x):
    return fn(params, rest, x)

  def fwd(params, rest, x):
    return fn(params, rest, x), (params, rest, x)

  def bwd(residuals, cotangents):
    params, rest, x = residuals
    dy = cotangents[0]
    x = x + (dy.reshape(-1)[0] * 0).astype(x.dtype)  # see the docstring
    _, vjp = jax.vjp(lambda p, v: fn(p, rest, v)[0], params, x)
    dparams, dx = vjp(dy)
    return dparams, jax.tree.map(_zero_cotangent, rest), dx

  call.defvjp(fwd, bwd)
  return call


def _call_block_remat(block: nnx.Module, x: Array, train: bool) -> Array:
  """`block(x)` whose activations are recomputed in the backward pass (`remat="block"`)."""
  graphdef, params, rest = nnx.split(block, nnx.Param, ...)
  params, params_def = jax.tree.flatten(params)
  rest, rest_def = jax.tree.flatten(rest)

  def pure(params, rest, x):  # arrays in, arrays out: NNX variables live inside one trace
    module = nnx.merge(graphdef, params_def.unflatten(params), rest_def.unflatten(rest))
    y = module(x, train=train)
    return y, jax.tree.leaves(nnx.state(module, nnx.Not(nnx.Param)))

  y, rest = _recompute_in_backward(pure)(params, rest, x)
  nnx.update(block, rest_def.unflatten(rest))
  return y


class MBConv(nnx.Module):
  """One stage: `depth - 1` residual bottlenecks, a stride-2 bottleneck, then BN."""

  def __init__(
      self,
      in_features: int,
      out_features: int,
      *,
      depth: int,
      expansion: int,
      dropout: float,
      stride: int = 2,
      remat: str = "none",
      norm: str = "batch",
      dtype: DType,
      param_dtype: DType,
      rngs: nnx.Rngs,
  ):
    self.remat = remat
    kw = dict(expansion=expansion, dropout=dropout, norm=norm, dtype=dtype,
              param_dtype=param_dtype, rngs=rngs)
    blocks = [Bottleneck(in_features, in_features, stride=1, **kw) for _ in range(depth - 1)]
    blocks.append(Bottleneck(in_features, out_features, stride=stride, **kw))
    self.blocks = nnx.List(blocks)
    self.bn = make_norm(out_features, norm, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x: Array, *, train: bool) -> Array:
    call = _call_block_remat if (train and self.remat == "block") else _call_block
    for block in self.blocks:
      x = call(block, x, train)
    return self.bn(x, train=train)


# What remat="auto" means on a CPU backend: the first stage recomputes. On the paper-shaped step
# this kept the trainer's peak host RSS below the original PyTorch code's at batch 32 and 64
# (5.86 vs 6.35 GiB, 10.7 vs 12.5 GiB) at the step time of "none" (+2 % at batch 32, -6 % at 64;
# "block:2" saved more memory but cost 8-10 % per step; docs/performance.md, "Memory").
# Accelerators hold activations in device memory: "none" there.
CPU_REMAT = "block:1"


def resolve_remat(remat: str, backend: str | None = None) -> str:
  """`remat` with "auto" replaced: `CPU_REMAT` on a CPU backend (`jax.default_backend()` unless
  given), "none" elsewhere."""
  if remat != "auto":
    return remat
  return CPU_REMAT if (backend or jax.default_backend()) == "cpu" else "none"


def resolve_dtype(dtype: str, backend: str | None = None) -> str:
  """The compute dtype, with "auto" replaced: "float32" on a CPU backend (`jax.default_backend()`
  unless given; no bfloat16 arithmetic there, so bfloat16 is slower), "bfloat16" elsewhere.
  bfloat16 training passed its check by outcome against float32 (docs/results.md §4b)."""
  if dtype != "auto":
    return dtype
  return "float32" if (backend or jax.default_backend()) == "cpu" else "bfloat16"


def remat_stage_count(remat: str, stages: int) -> int:
  """How many leading MBConv stages recompute their bottlenecks: "none" -> 0, "block" -> all,
  "block:N" -> N (0 <= N <= stages), "auto" -> `resolve_remat`'s choice for this backend."""
  remat = resolve_remat(remat)
  if remat == "none":
    return 0
  if remat == "block":
    return stages
  head, _, n = remat.partition(":")
  if head == "block" and n.isdigit() and int(n) <= stages:
    return int(n)
  raise ValueError(f"remat must be 'none', 'block', 'block:N' with 0 <= N <= {stages} or "
                   f"'auto', got {remat!r}")


def max_pool3(x: Array) -> Array:
  """Max-pool with kernel 3, stride 1 and padding 1 (padded with -inf) over the time axis."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (0, 0)), constant_values=-jnp.inf)
  n = x.shape[1]
  return jnp.maximum(jnp.maximum(xp[:, :n], xp[:, 1:n + 1]), xp[:, 2:n + 2])


class EffNet1D(nnx.Module):
  """EffNet-1D encoder: `[batch, channels, samples]` -> `[batch, embed_dim]` (float32).

  Args:
    in_channels: input channels (e.g. 5 BAS, 1 ECG, 3 respiratory channels).
    widths: stem width followed by one width per MBConv stage.
    depths: bottlenecks per MBConv stage (`len(widths) - 1` entries).
    head_width: width of the final 1x1 convolution before pooling.
    embed_dim: output size of the final linear layer; `None` drops it, and the encoder then
      returns the `head_width` pooled features (after ReLU and dropout).
    expansion: bottleneck expansion factor.
    dropout: dropout rate in the residual bottlenecks and before the final linear layer.
    pool_after: 0-based MBConv stage indices followed by the k=3/s=1 max-pool.
    remat: "none" keeps every activation for the backward pass; "block" keeps only each
      bottleneck's input and recomputes its activations in the backward pass (same gradients,
      a fraction of the memory, about one more forward pass of compute); "block:N" does so in
      the first N MBConv stages only: the early stages hold the longest activations for the
      fewest FLOPs, so they give most of the saving for a fraction of the recomputation;
      "auto": `CPU_REMAT` on a CPU backend, "none" on accelerators (`resolve_remat`).
    norm: "batch" (the original's BatchNorm, statistics of the batch in training) or "group:G"
      (GroupNorm with G groups: per-sample statistics, no running statistics; every width,
      including the expanded ones, must divide by G). Every "BN" above is this layer.
    dtype: compute dtype (e.g. `jnp.bfloat16`); BN statistics are float32 regardless.
    param_dtype: parameter dtype.
    rngs: `nnx.Rngs` with a `params` stream and, for training, a `dropout` stream.
  """

  def __init__(
      self,
      in_channels: int,
      *,
      widths: Sequence[int] = WIDTHS,
      depths: Sequence[int] = DEPTHS,
      head_width: int = HEAD_WIDTH,
      embed_dim: int | None = EMBED_DIM,
      expansion: int = EXPANSION,
      dropout: float = DROPOUT,
      pool_after: Sequence[int] = POOL_AFTER,
      remat: str = "none",
      norm: str = "batch",
      dtype: DType = jnp.float32,
      param_dtype: DType = jnp.float32,
      rngs: nnx.Rngs,
  ):
    if in_channels < 1:
      raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if len(depths) != len(widths) - 1:
      raise ValueError(f"need one depth per MBConv stage: widths={widths}, depths={depths}")
    remat_stages = remat_stage_count(remat, len(depths))
    parse_norm(norm)  # a bad setting fails here, before any layer is built
    self.in_channels = in_channels
    self.widths = tuple(widths)
    self.depths = tuple(depths)
    self.head_width = head_width
    self.embed_dim = embed_dim
    self.pool_after = tuple(pool_after)
    self.norm = norm
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.stem = Conv1d(in_channels, widths[0], 3, stride=2, padding=1, rngs=rngs, **kw)
    self.stem_bn = make_norm(widths[0], norm, **kw)
    self.stages = nnx.List([
        MBConv(widths[i], widths[i + 1], depth=depths[i], expansion=expansion,
               dropout=dropout, remat="block" if i < remat_stages else "none", norm=norm,
               rngs=rngs, **kw)
        for i in range(len(depths))
    ])
    self.head = Conv1d(widths[-1], head_width, 1, rngs=rngs, **kw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    if embed_dim is None:
      self.fc = None
    else:
      self.fc = nnx.Linear(head_width, embed_dim, kernel_init=torch_default_init(head_width),
                           bias_init=torch_default_init(head_width), rngs=rngs, **kw)

  @property
  def out_features(self) -> int:
    return self.head_width if self.embed_dim is None else self.embed_dim

  def __call__(
      self, x: Array, *, train: bool, return_intermediates: bool = False
  ) -> Array | tuple[Array, dict[str, Array]]:
    """Encodes `x` of shape `[batch, channels, samples]`.

    Args:
      x: input windows, channels-first.
      train: batch statistics and BN running-stat updates and dropout when True; running
        statistics and no dropout when False.
      return_intermediates: also return a dict of the activations after the stem, after each
        MBConv stage (`stage{i}`, 1-based, and `pool{i}` where pooled), the head conv
        (`head`) and global pooling (`pooled`), all NWC.

    Returns:
      `[batch, out_features]` float32, and the intermediates dict when requested.
    """
    if x.ndim != 3 or x.shape[1] != self.in_channels:
      raise ValueError(
          f"expected [batch, {self.in_channels}, samples], got shape {tuple(x.shape)}")
    inter = {}
    h = jnp.transpose(x, (0, 2, 1)).astype(self.dtype)  # NCW -> NWC
    h = self.stem_bn(self.stem(h), train=train)
    inter["stem"] = h
    for i, stage in enumerate(self.stages):
      h = stage(h, train=train)
      inter[f"stage{i + 1}"] = h
      if i in self.pool_after:
        h = max_pool3(h)
        inter[f"pool{i + 1}"] = h
    h = self.head(h)
    inter["head"] = h
    h = jax.nn.relu(jnp.mean(h.astype(jnp.float32), axis=1))
    inter["pooled"] = h
    h = self.dropout(h, deterministic=not train)
    if self.fc is not None:
      h = self.fc(h.astype(self.dtype))
    h = h.astype(jnp.float32)
    return (h, inter) if return_intermediates else h


def count_params(module: nnx.Module) -> int:
  """Number of trainable parameters (nnx.Param entries; BN running statistics excluded)."""
  return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
