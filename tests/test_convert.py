"""PyTorch reference parity and original-checkpoint conversion."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import REPO
from sleepfm_jax.training import convert
from sleepfm_jax.models.effnet1d import EffNet1D
from sleepfm_jax.models.sleepfm import SleepFM

torch = pytest.importorskip("torch")
from sleepfm_jax.training import torch_reference  # noqa: E402  (needs torch for its models)

TINY = dict(widths=(8, 8, 8, 16, 16, 16, 24, 24), depths=(1, 2, 1, 2, 1, 1, 2), head_width=32,
            embed_dim=16)
# Fewer stages (cheaper to compile) for the train-step and checkpoint tests; still residual and
# stride-2 bottlenecks, a max-pool, and the original's key names (stage2..stage5, head stage6).
SMALL = dict(widths=(8, 8, 8, 16, 16), depths=(1, 2, 1, 2), head_width=16, embed_dim=8)


@nnx.jit(static_argnames="train")
def apply(model, x, train):
  return model(x, train=train)


def _torch_model(c_in, seed, length=512, **kw):
  """A torch EffNet-1D with random weights, BN affine and BN running statistics.

  Fully random running statistics make a deep eval-mode network nearly ignore its input (the
  parity check would then only compare biases); the running statistics are therefore estimated
  from random data, as training would, after the BN affine parameters were randomised.
  """
  torch.manual_seed(seed)
  model = torch_reference.build_effnet(c_in, **kw)
  torch_reference.randomise_batch_stats(model, seed)
  calib = torch.randn(8, c_in, length, generator=torch.Generator().manual_seed(seed)) * 20.0
  torch_reference.calibrate_batch_stats(model, calib)
  return model


def _dropout_free_pair(seed):
  """A torch EffNet-1D (`SMALL`, 3 channels) and the JAX one with its weights, dropout off in
  both (dropout masks cannot match across frameworks)."""
  tmodel = _torch_model(3, seed=seed, **SMALL)
  for module in tmodel.modules():
    if isinstance(module, torch.nn.Dropout):
      module.p = 0.0
  jmodel = EffNet1D(3, rngs=nnx.Rngs(0), dropout=0.0, **SMALL)
  convert.load_torch_weights(jmodel, tmodel.state_dict())
  return tmodel, jmodel


def _at(tree, path):
  """The entry of a nested dict at an nnx state path."""
  for p in path:
    tree = tree[p]
  return tree


def _torch_forward(model, x, train=False):
  model.train(train)
  with torch.no_grad():
    return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("c_in,expected", [(1, 3_470_040), (3, 3_470_232), (5, 3_470_424)])
def test_torch_reference_parameter_count_and_keys(c_in, expected):
  model = torch_reference.build_effnet(c_in)
  assert sum(p.numel() for p in model.parameters()) == expected
  keys = model.state_dict().keys()
  # The original's naming, including its stage block names s0.. and s{depth+1}.
  for key in ("stage1.weight", "b0.running_var", "stage2.stack.s2.conv2.weight",
              "stage8.stack.s0.b1.num_batches_tracked", "stage8.stack.s4.conv3.bias",
              "stage8.bn.weight", "stage9.weight", "fc.weight"):
    assert key in keys


@pytest.mark.parametrize("c_in,batch,length", [(5, 2, 7680), (3, 3, 1920), (1, 3, 1920)])
def test_eval_embeddings_match_pytorch(c_in, batch, length):
  tmodel = _torch_model(c_in, seed=c_in, length=length)
  jmodel = EffNet1D(c_in, rngs=nnx.Rngs(0))
  convert.load_torch_weights(jmodel, tmodel.state_dict())
  rng = np.random.default_rng(c_in)
  x = (rng.normal(size=(batch, c_in, length)) * 20.0).astype(np.float32)
  y_torch = _torch_forward(tmodel, x)
  y_jax = np.asarray(apply(jmodel, jnp.asarray(x), False))
  scale = np.abs(y_torch).max()
  np.testing.assert_allclose(y_jax, y_torch, atol=1e-4 * scale, rtol=1e-4)
  # The embeddings do depend on the input, far beyond the tolerance.
  assert np.abs(y_torch[0] - y_torch[1]).max() > 1e-2 * scale


def test_calibrated_running_statistics_match_pytorch_cumulative_averaging():
  """`calibrate_batch_stats` over several batches gives PyTorch's `momentum=None` running
  statistics (every BN layer, dropout off in both), hence the same eval-mode embeddings."""
  from sleepfm_jax.models.batch_stats import calibrate_batch_stats  # pylint: disable=import-outside-toplevel

  tmodel, jmodel = _dropout_free_pair(11)
  rng = np.random.default_rng(11)
  xs = [(rng.normal(size=(4, 3, 512)) * s).astype(np.float32) for s in (30.0, 3.0, 10.0)]
  torch_reference.calibrate_batch_stats(tmodel, *(torch.from_numpy(x) for x in xs))
  calibrate_batch_stats(jmodel, [jnp.asarray(x) for x in xs])
  want_sd = convert.torch_state_dict_to_nnx(jmodel, tmodel.state_dict())
  flat = dict(nnx.to_flat_state(nnx.state(jmodel, nnx.BatchStat)))
  assert len(flat) == 2 * (1 + 2 * sum(SMALL["depths"]) + len(SMALL["depths"]))
  for path, var in flat.items():
    np.testing.assert_allclose(np.asarray(var[...]), _at(want_sd, path), rtol=2e-4, atol=1e-6,
                               err_msg=str(path))
  x = (rng.normal(size=(2, 3, 512)) * 10.0).astype(np.float32)
  y_torch = _torch_forward(tmodel, x)
  np.testing.assert_allclose(np.asarray(apply(jmodel, jnp.asarray(x), False)), y_torch,
                             rtol=1e-3, atol=1e-4 * np.abs(y_torch).max())


def test_train_mode_batch_statistics_and_gradients_match_pytorch():
  tmodel, jmodel = _dropout_free_pair(7)
  x = np.random.default_rng(7).normal(size=(4, 3, 512)).astype(np.float32)

  tmodel.train()
  y_torch = tmodel(torch.from_numpy(x))
  (y_torch ** 2).sum().backward()

  graphdef, params, rest = nnx.split(jmodel, nnx.Param, ...)

  @jax.jit
  def step(params, rest, x):
    model = nnx.merge(graphdef, params, rest)

    def loss(m):
      y = m(x, train=True)
      return jnp.sum(y ** 2), y

    (_, y), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    return y, grads, nnx.state(model, nnx.BatchStat)

  y_jax, grads, stats = step(params, rest, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(y_jax), y_torch.detach().numpy(), rtol=1e-4, atol=1e-5)

  # Running statistics after one train step (momentum 0.1, unbiased running variance).
  updated = convert.torch_state_dict_to_nnx(jmodel, tmodel.state_dict())
  flat_stats = dict(nnx.to_flat_state(stats))
  assert len(flat_stats) == 2 * (1 + 2 * sum(SMALL["depths"]) + len(SMALL["depths"]))  # mean, var
  for path, var in flat_stats.items():
    np.testing.assert_allclose(np.asarray(var[...]), _at(updated, path), rtol=1e-4, atol=1e-6,
                               err_msg=str(path))

  # Gradients: convert torch's .grad tensors with the same key map and compare every Param.
  grad_sd = dict(tmodel.state_dict())
  grad_sd.update({k: p.grad for k, p in tmodel.named_parameters()})
  torch_grads = convert.torch_state_dict_to_nnx(jmodel, grad_sd)
  flat_grads = dict(nnx.to_flat_state(grads))
  assert len(flat_grads) == len(list(tmodel.parameters()))
  wants = {path: _at(torch_grads, path) for path in flat_grads}
  # Biases of convolutions followed by train-mode BN have a true gradient of 0 (BN removes
  # constants), so both frameworks give rounding noise there: errors are judged per tensor
  # relative to its own norm, with a floor relative to the largest gradient.
  floor = 1e-6 * max(np.abs(w).max() for w in wants.values())
  for path, g in flat_grads.items():
    err = np.linalg.norm(np.asarray(g[...]) - wants[path])
    assert err <= 1e-3 * np.linalg.norm(wants[path]) + floor * np.sqrt(g.size), path


def test_converter_refuses_mismatched_missing_and_unexpected_keys():
  jmodel = nnx.eval_shape(lambda: EffNet1D(5, rngs=nnx.Rngs(0), **TINY))
  sd3 = torch_reference.build_effnet(3, **TINY).state_dict()
  with pytest.raises(ValueError, match=r"'stage1\.weight': shape \(8, 3, 3\)"):
    convert.torch_state_dict_to_nnx(jmodel, sd3)
  sd5 = dict(torch_reference.build_effnet(5, **TINY).state_dict())
  convert.torch_state_dict_to_nnx(jmodel, sd5)  # fits
  missing = {k: v for k, v in sd5.items() if k != "stage3.stack.s3.conv2.bias"}
  with pytest.raises(ValueError, match=r"missing key\(s\) \['stage3\.stack\.s3\.conv2\.bias'\]"):
    convert.torch_state_dict_to_nnx(jmodel, missing)
  grouped = nnx.eval_shape(lambda: EffNet1D(5, rngs=nnx.Rngs(0), norm="group:8", **TINY))
  with pytest.raises(ValueError, match="original's encoders use BatchNorm.*'group:8'"):
    convert.torch_state_dict_to_nnx(grouped, sd5)
  with pytest.raises(ValueError, match=r"unexpected key\(s\) \['stage10\.weight'\]"):
    convert.torch_state_dict_to_nnx(jmodel, {**sd5, "stage10.weight": sd5["stage9.weight"]})
  # The converted arrays are copies: in-place torch updates do not reach them.
  pure = convert.torch_state_dict_to_nnx(jmodel, sd5)
  sd5["b0.running_mean"].add_(1.0)
  assert np.all(pure["stem_bn"]["mean"] == 0.0)
  prefixed = {f"module.{k}": v for k, v in sd5.items()}  # DataParallel
  pure = convert.torch_state_dict_to_nnx(jmodel, prefixed)
  np.testing.assert_array_equal(pure["fc"]["kernel"], sd5["fc.weight"].numpy().T)
  np.testing.assert_array_equal(pure["stem"]["kernel"],
                                sd5["stage1.weight"].numpy().transpose(2, 1, 0))


def _save_original_style_checkpoint(path, models, temperature):
  """Writes a checkpoint the way the original pretraining script does (DataParallel, SGD)."""
  wrapped = {k: torch.nn.DataParallel(m) for k, m in models.items()}
  temp = torch.nn.Parameter(torch.as_tensor(temperature))
  params = [p for m in wrapped.values() for p in m.parameters()] + [temp]
  optim = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
  sched = torch.optim.lr_scheduler.StepLR(optim, 5)
  loss = sum(m(torch.randn(2, m.module.stage1.in_channels, 512)).sum()
             for m in wrapped.values()) * temp
  loss.backward()  # leaves momentum buffers in the optimiser state, as a real run does
  optim.step()
  sched.step()
  save = {"epoch": 3, "temperature": temp.item(), "optim_dict": optim.state_dict(),
          "scheduler_dict": sched.state_dict(), "best_loss": 1.25, "loss": 1.5}
  for key, m in wrapped.items():
    save[f"{key}_state_dict"] = m.state_dict()
  torch.save(save, path)
  return save


def test_original_checkpoint_round_trip(tmp_path):
  models = {"respiratory": _torch_model(3, 1, **SMALL), "sleep_stages": _torch_model(5, 2, **SMALL),
            "ekg": _torch_model(1, 3, **SMALL)}
  path = tmp_path / "best.pt"
  saved = _save_original_style_checkpoint(path, models, 0.37)
  assert next(iter(saved["ekg_state_dict"])).startswith("module.")

  ckpt = convert.load_original_checkpoint(path)
  assert ckpt["in_channels"] == {"bas": 5, "ecg": 1, "resp": 3}
  assert ckpt["epoch"] == 3 and ckpt["best_loss"] == 1.25
  assert ckpt["temperature"] == pytest.approx(saved["temperature"])

  model = convert.sleepfm_from_original_checkpoint(path, rngs=nnx.Rngs(0), **SMALL)
  assert float(model.t[...]) == pytest.approx(saved["temperature"])
  rng = np.random.default_rng(0)
  batch = {"bas": rng.normal(size=(2, 5, 512)), "ecg": rng.normal(size=(2, 1, 512)),
           "resp": rng.normal(size=(2, 3, 512))}
  batch = {k: v.astype(np.float32) for k, v in batch.items()}
  out = nnx.jit(lambda m, b: m(b, train=False))(model, {k: jnp.asarray(v)
                                                           for k, v in batch.items()})
  for modality, key in (("bas", "sleep_stages"), ("ecg", "ekg"), ("resp", "respiratory")):
    want = _torch_forward(models[key], batch[modality])  # updated by the SGD step, like the file
    np.testing.assert_allclose(np.asarray(out[modality]), want, rtol=1e-4, atol=1e-5)

  # A model whose modalities differ from the checkpoint's is refused.
  other = nnx.eval_shape(lambda: SleepFM({"bas": 5, "ecg": 1}, rngs=nnx.Rngs(0), **SMALL))
  with pytest.raises(ValueError, match="checkpoint has encoders for"):
    convert.torch_state_dict_to_nnx(other, ckpt)

  torch.save({"model": {}}, tmp_path / "other.pt")
  with pytest.raises(ValueError, match="no encoder weights"):
    convert.load_original_checkpoint(tmp_path / "other.pt")


def test_package_imports_without_torch():
  code = ("import sys; sys.modules['torch'] = None\n"
          "import sleepfm_jax.training.convert, sleepfm_jax.training.torch_reference\n"
          "import sleepfm_jax.models.sleepfm\n"
          "try:\n"
          "  sleepfm_jax.training.torch_reference.build_effnet(1)\n"
          "except ImportError as e:\n"
          "  print('ImportError:', e)\n")
  res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, check=False)
  assert res.returncode == 0, res.stderr
  assert "pip install torch" in res.stdout


def _original_models():
  return {"respiratory": _torch_model(3, 1, **SMALL), "sleep_stages": _torch_model(5, 2, **SMALL),
          "ekg": _torch_model(1, 3, **SMALL)}


def test_converted_checkpoint_embeds_like_pytorch(tmp_path):
  """Original .pt -> Orbax checkpoint -> export's Embedder: the PyTorch embeddings, per modality."""
  from sleepfm_jax import export  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.configs import preprocess as preprocess_configs  # pylint: disable=C0415
  from sleepfm_jax.configs import pretrain as pretrain_configs  # pylint: disable=C0415
  from sleepfm_jax.training import checkpointing  # pylint: disable=import-outside-toplevel

  models = _original_models()
  _save_original_style_checkpoint(tmp_path / "best.pt", models, 0.5)
  config = pretrain_configs.get_config("paper")
  config.model.update(widths=SMALL["widths"], depths=SMALL["depths"],
                      head_width=SMALL["head_width"], embed_dim=SMALL["embed_dim"])
  prep = preprocess_configs.get_config("paper").to_dict()
  out = convert.original_checkpoint_to_orbax(tmp_path / "best.pt", tmp_path / "converted",
                                             config=config, preprocessing=prep)
  assert out.endswith("/3")  # the original's epoch
  meta = checkpointing.load_meta(str(tmp_path / "converted"))
  assert meta["channels"] == {"bas": ["C3-M2", "C4-M1", "O1-M2", "O2-M1", "E1-M2"],
                              "ecg": ["ECG"], "resp": ["Thorax", "SpO2", "Abdomen"]}
  assert meta["sample_rate"] == 256 and meta["preprocessing"]["normalise"] == "none"
  assert meta["config"]["model"]["dtype"] == "auto"  # the paper preset: bfloat16 on accelerators
  assert meta["converted_from"]["temperature"] == pytest.approx(0.5, abs=0.01)

  embedder = export.load_embedder(str(tmp_path / "converted"), batch_size=4, devices=jax.devices()[:1])
  rng = np.random.default_rng(1)
  batch = {"valid": np.array([True, True, True, False])}
  for m, n in (("bas", 5), ("ecg", 1), ("resp", 3)):
    batch[m] = (rng.normal(size=(4, n, 512)) * 20).astype(np.float32)
    batch[f"mask_{m}"] = np.ones((4, n), bool)
  emb, present = embedder.embed_batch(batch, {m: np.arange(n) for m, n in (("bas", 5), ("ecg", 1),
                                                                             ("resp", 3))})
  for modality, key in (("bas", "sleep_stages"), ("ecg", "ekg"), ("resp", "respiratory")):
    assert emb[modality].shape == (3, SMALL["embed_dim"]) and present[modality].all()
    want = _torch_forward(models[key], batch[modality][:3])
    np.testing.assert_allclose(emb[modality], want, rtol=1e-4, atol=1e-5, err_msg=modality)

  with pytest.raises(ValueError, match="encoder 'resp' takes 3 input channels"):
    convert.original_checkpoint_to_orbax(tmp_path / "best.pt", tmp_path / "bad", config=config,
                                         preprocessing=prep, channels={"resp": ["Thorax"]})


def test_convert_cli_refuses_an_architecture_mismatch(tmp_path):
  """The CLI's default config is the paper's architecture; a smaller network is refused clearly,
  in one line. Run from another folder: the default configs are found inside the package."""
  _save_original_style_checkpoint(tmp_path / "best.pt", _original_models(), 0.1)
  proc = subprocess.run(
      [sys.executable, str(REPO / "experiments" / "convert_torch_checkpoint.py"),
       f"--input={tmp_path / 'best.pt'}", f"--out={tmp_path / 'out'}"],
      capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
  assert proc.returncode != 0
  # (This used to look for "shape" anywhere in stderr, which the traceback's source lines gave.)
  assert "encoder 'bas': state dict does not fit the encoder" in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "out").exists()
  assert "Traceback" not in proc.stderr and "No such file" not in proc.stderr, proc.stderr[-2000:]
