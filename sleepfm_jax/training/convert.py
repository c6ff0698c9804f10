"""Converts original SleepFM (PyTorch) weights into this project's Flax NNX models.

The original pretraining script saves one `.pt` file per epoch (`checkpoint.pt`) and one for the
best validation loss (`best.pt`), a dict with

  respiratory_state_dict    -> modality "resp"  (CHEST, SaO2, ABD in the released config)
  sleep_stages_state_dict   -> modality "bas"   (C3-M2, C4-M1, O1-M2, O2-M1, E1-M2)
  ekg_state_dict            -> modality "ecg"   (ECG)
  temperature               (float: the logit scale is exp(temperature))
  epoch, best_loss, loss    (numbers)
  optim_dict, scheduler_dict (SGD and StepLR state; not needed for inference, ignored)

Only the modalities that were trained are present. The encoders were wrapped in
`torch.nn.DataParallel`, so their keys usually carry a `module.` prefix, which is stripped.

Usage:

  ckpt = load_original_checkpoint("best.pt")          # numpy arrays only, no pickle code run
  model = SleepFM(ckpt["in_channels"], rngs=nnx.Rngs(0))
  load_torch_weights(model, ckpt)                     # in place; or:
  pure = torch_state_dict_to_nnx(model, ckpt)         # nested dict for nnx.replace_by_pure_dict

Layout changes: Conv1d weights `[out, in/groups, k]` become `[k, in/groups, out]`; Linear
weights `[out, in]` become `[in, out]`; BN `weight/bias/running_mean/running_var` become
`scale/bias/mean/var`; `num_batches_tracked` is dropped (unused with a fixed momentum).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from sleepfm_jax.models.effnet1d import EffNet1D
from sleepfm_jax.models.sleepfm import SleepFM
from sleepfm_jax.training.torch_reference import import_torch, stage_block_names

# Original checkpoint entry -> this project's modality name.
CHECKPOINT_KEYS = {
    "sleep_stages_state_dict": "bas",
    "ekg_state_dict": "ecg",
    "respiratory_state_dict": "resp",
}
_BN_FIELDS = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_IGNORED_SUFFIX = "num_batches_tracked"
_WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)  # what conversion fills (not RNG state)

Path = tuple[Any, ...]


def _conv(prefix: str, path: Path) -> dict[str, tuple[Path, str]]:
  return {f"{prefix}.weight": (path + ("kernel",), "conv"),
          f"{prefix}.bias": (path + ("bias",), "id")}


def _bn(prefix: str, path: Path) -> dict[str, tuple[Path, str]]:
  return {f"{prefix}.{t}": (path + (n,), "id") for t, n in _BN_FIELDS.items()}


def encoder_key_map(encoder: EffNet1D) -> dict[str, tuple[Path, str]]:
  """Original state-dict key -> (path in `nnx.state(encoder)`, layout transform) for `encoder`.

  The transform is "conv" (`[out, in, k]` -> `[k, in, out]`), "linear" (transpose) or "id".
  """
  if encoder.norm != "batch":
    raise ValueError(f"the original's encoders use BatchNorm; this encoder has "
                     f"norm={encoder.norm!r}: set the config's model.norm to 'batch'")
  m = {}
  m.update(_conv("stage1", ("stem",)))
  m.update(_bn("b0", ("stem_bn",)))
  for i, depth in enumerate(encoder.depths):
    stage = f"stage{i + 2}"
    for j, name in enumerate(stage_block_names(depth)):
      src, dst = f"{stage}.stack.{name}", ("stages", i, "blocks", j)
      m.update(_conv(f"{src}.conv1", dst + ("expand",)))
      m.update(_bn(f"{src}.b0", dst + ("expand_bn",)))
      m.update(_conv(f"{src}.conv2", dst + ("depthwise",)))
      m.update(_bn(f"{src}.b1", dst + ("depthwise_bn",)))
      m.update(_conv(f"{src}.conv3", dst + ("project",)))
    m.update(_bn(f"{stage}.bn", ("stages", i, "bn")))
  m.update(_conv(f"stage{len(encoder.depths) + 2}", ("head",)))
  if encoder.fc is not None:
    m["fc.weight"] = (("fc", "kernel"), "linear")
    m["fc.bias"] = (("fc", "bias"), "id")
  return m


def _to_numpy(value: Any) -> np.ndarray:
  """A float32 numpy *copy*.

  Copying matters: `Tensor.numpy()` shares the tensor's memory and `jnp.asarray` may share the
  numpy buffer on CPU, so without a copy a later in-place update of the torch model (e.g. BN
  running statistics in a train-mode forward) would silently change the converted JAX weights.
  """
  if hasattr(value, "detach"):  # a torch tensor; bf16/fp16 go through float32
    value = value.detach().cpu().float().numpy()
  return np.array(value, dtype=np.float32, copy=True)


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for key, value in state_dict.items():
    k = key[len("module."):] if key.startswith("module.") else key
    if k in out:
      raise ValueError(f"key '{k}' appears both with and without the 'module.' prefix")
    out[k] = value
  return out


def _set(tree: dict, path: Path, value: np.ndarray) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _get(tree: Any, path: Path) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def _convert_encoder(encoder: EffNet1D, state_dict: Mapping[str, Any], where: str) -> dict:
  """One encoder's torch state dict -> nested pure dict of float32 numpy arrays."""
  sd = _strip_prefix(state_dict)
  key_map = encoder_key_map(encoder)
  missing = [k for k in key_map if k not in sd]
  unexpected = [k for k in sd if k not in key_map and not k.endswith(_IGNORED_SUFFIX)]
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing key(s) {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
    if unexpected:
      parts.append(f"unexpected key(s) {unexpected[:5]}"
                   + (" ..." if len(unexpected) > 5 else ""))
    raise ValueError(f"{where}: state dict does not fit the encoder "
                     f"(in_channels={encoder.in_channels}): " + "; ".join(parts))
  target = nnx.to_pure_dict(nnx.state(encoder, _WEIGHTS))
  out: dict = {}
  for key, (path, kind) in key_map.items():
    value = _to_numpy(sd[key])
    if kind == "conv":
      if value.ndim != 3:
        raise ValueError(f"{where}: key '{key}': expected a 3-D Conv1d weight, got shape "
                         f"{value.shape}")
      value = value.transpose(2, 1, 0)
    elif kind == "linear":
      if value.ndim != 2:
        raise ValueError(f"{where}: key '{key}': expected a 2-D Linear weight, got shape "
                         f"{value.shape}")
      value = value.T
    expected = tuple(_get(target, path).shape)
    if value.shape != expected:
      raise ValueError(f"{where}: key '{key}': shape {tuple(_to_numpy(sd[key]).shape)} does not "
                       f"fit the encoder (in_channels={encoder.in_channels}), which expects "
                       f"{expected} after conversion (as {'/'.join(map(str, path))})")
    _set(out, path, np.ascontiguousarray(value, dtype=np.float32))
  return out


def torch_state_dict_to_nnx(module: EffNet1D | SleepFM, state_dict: Mapping[str, Any]) -> dict:
  """Converts PyTorch weights into a pure dict for `module` (nothing is modified).

  Args:
    module: an `EffNet1D` (then `state_dict` is one encoder's torch state dict, optionally
      with `module.` prefixes), or a `SleepFM` (then `state_dict` is what
      `load_original_checkpoint` returns, or a plain `{modality: encoder_state_dict}`).
  Returns:
    A nested dict of float32 numpy arrays with the structure of
    `nnx.to_pure_dict(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat)))`.
  Raises:
    ValueError: naming the key, on a missing, unexpected or wrongly shaped entry, or when the
      checkpoint's modalities differ from the model's.
  """
  if isinstance(module, EffNet1D):
    return _convert_encoder(module, state_dict, "encoder")
  if not isinstance(module, SleepFM):
    raise TypeError(f"cannot convert into {type(module).__name__}; expected EffNet1D or SleepFM")
  encoders = state_dict.get("encoders", state_dict)
  if set(encoders) != set(module.modalities):
    raise ValueError(f"checkpoint has encoders for {sorted(encoders)}, the model for "
                     f"{sorted(module.modalities)}")
  out = {"encoders": {m: _convert_encoder(module.encoders[m], encoders[m], f"encoder '{m}'")
                      for m in module.modalities}}
  temperature = state_dict.get("temperature")
  if temperature is not None:
    out["t"] = np.asarray(temperature, np.float32).reshape(())
  return out


def load_torch_weights(module: EffNet1D | SleepFM, state_dict: Mapping[str, Any]):
  """Converts (see `torch_state_dict_to_nnx`) and writes the weights into `module` in place."""
  pure = torch_state_dict_to_nnx(module, state_dict)
  state = nnx.state(module, _WEIGHTS)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(module, state)
  return module


def load_original_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
  """Reads an original SleepFM `.pt` checkpoint safely (`torch.load(weights_only=True)`).

  Returns:
    `{"encoders": {modality: {key: float32 np.ndarray}}, "in_channels": {modality: int},
      "temperature": float | None, "epoch": int | None, "best_loss": float | None,
      "loss": float | None}`. Optimiser and scheduler state are dropped.
  Raises:
    ValueError: when the file holds none of the three `*_state_dict` entries.
  """
  torch = import_torch()
  ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
  if not isinstance(ckpt, Mapping):
    raise ValueError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
  encoders = {}
  for key, modality in CHECKPOINT_KEYS.items():
    if key in ckpt:
      encoders[modality] = {k: _to_numpy(v) for k, v in _strip_prefix(ckpt[key]).items()
                            if not k.endswith(_IGNORED_SUFFIX)}
  if not encoders:
    raise ValueError(f"{path}: no encoder weights; expected some of {sorted(CHECKPOINT_KEYS)}, "
                     f"found keys {sorted(ckpt)[:10]}")
  in_channels = {}
  for m, sd in encoders.items():
    if "stage1.weight" not in sd:
      raise ValueError(f"{path}: encoder '{m}': missing key 'stage1.weight'")
    in_channels[m] = int(sd["stage1.weight"].shape[1])

  def scalar(name, cast):
    v = ckpt.get(name)
    return None if v is None else cast(v.item() if hasattr(v, "item") else v)

  return {
      "encoders": encoders,
      "in_channels": {m: in_channels[m] for m in ("bas", "ecg", "resp") if m in in_channels},
      "temperature": scalar("temperature", float),
      "epoch": scalar("epoch", int),
      "best_loss": scalar("best_loss", float),
      "loss": scalar("loss", float),
  }


def sleepfm_from_original_checkpoint(path: str | os.PathLike, *, rngs: nnx.Rngs,
                                     **encoder_kwargs: Any) -> SleepFM:
  """Builds a `SleepFM` shaped like the checkpoint (modalities, channels) and loads it."""
  ckpt = load_original_checkpoint(path)
  model = SleepFM(ckpt["in_channels"], rngs=rngs, **encoder_kwargs)
  return load_torch_weights(model, ckpt)


def original_checkpoint_to_orbax(path: str | os.PathLike, output: str | os.PathLike, *,
                                 config: Any, preprocessing: Mapping[str, Any],
                                 channels: Mapping[str, Sequence[str]] | None = None,
                                 step: int | None = None) -> str:
  """Converts an original SleepFM `.pt` file into a checkpoint that `export`/`embed` can load.

  Args:
    path: the original `.pt` file (read with `weights_only=True`).
    output: directory of the new checkpoint (an Orbax `CheckpointManager` directory).
    config: the pretraining config describing the encoders (`configs/pretrain.py:paper` for the
      original's architecture); its `model` and `loss` settings are stored in the meta.
    preprocessing: a `PreprocessConfig.to_dict()` saying how windows must be prepared for these
      weights (paper: montage "paper", 256 Hz, 30 s, raw ADC counts, no normalisation, FFT
      resampling, the original's alignment); its `units` are the checkpoint's from then on (the
      exporter refuses stores in other units).
    channels: input channel names per modality, in the encoders' channel order; default the
      preprocessing montage's channels. Their count must equal the checkpoint's in-channels.
    step: the step recorded (default: the checkpoint's epoch, else 0).

  Returns:
    The written step directory.
  Raises:
    ValueError: shapes or channel counts that do not match, naming the modality and key.
  """
  from sleepfm_jax.data.preprocess import PreprocessConfig  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import checkpointing  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training.factories import build_model  # pylint: disable=import-outside-toplevel

  ckpt = load_original_checkpoint(path)
  prep = PreprocessConfig.from_dict(dict(preprocessing))
  montage = prep.get_montage()
  channels = {m: tuple(channels[m]) if channels and m in channels else montage.channels(m)
              for m in ckpt["in_channels"]}
  for m, n in ckpt["in_channels"].items():
    if len(channels[m]) != n:
      raise ValueError(f"{path}: encoder '{m}' takes {n} input channels, but {len(channels[m])} "
                       f"channel names were given for it: {list(channels[m])}")
    unknown = [c for c in channels[m] if c not in montage.channels(m)]
    if unknown:
      raise ValueError(f"{path}: channels {unknown} of '{m}' are not in the montage "
                       f"{montage.to_dict()[m]}")
  model = build_model(config, ckpt["in_channels"], seed=0)
  load_torch_weights(model, ckpt)  # refuses mismatched shapes, missing or unexpected keys
  pure = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState)))
  samples = int(round(prep.sample_rate * prep.window_seconds))
  meta = {"config": config.to_dict(), "in_channels": dict(ckpt["in_channels"]),
          "channels": {k: list(v) for k, v in channels.items()},
          "modalities": list(ckpt["in_channels"]), "sample_rate": int(prep.sample_rate),
          "samples": samples, "montage": montage.to_dict(), "preprocessing": prep.to_dict(),
          "window_seconds": float(prep.window_seconds),
          "converted_from": {"path": os.path.abspath(os.fspath(path)),
                             "temperature": ckpt["temperature"], "epoch": ckpt["epoch"],
                             "best_loss": ckpt["best_loss"], "loss": ckpt["loss"]}}
  step = step if step is not None else (ckpt["epoch"] or 0)
  return checkpointing.save_model_checkpoint(os.fspath(output), step, pure, meta)
