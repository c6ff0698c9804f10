"""What the original SleepFM fed its encoders: raw units, FFT resampling, its window alignment.

The end-to-end test embeds a CinC-2018-format record with a converted original-format checkpoint
through `sleepfm_jax.embed` and compares with the PyTorch reference run on the windows that the
original's extraction script cuts (`cinc_files.original_windows`, with MNE).
"""

import edfio
import numpy as np
import pytest
import scipy.io

import cinc_files as cf
from psg_files import write_edf
from sleepfm_jax.data import discovery, preprocess, units
from sleepfm_jax.data import signal as sig
from sleepfm_jax.data.channels import MONTAGES
from sleepfm_jax.data.recording import open_recording
from sleepfm_jax.data.store import WindowStore

_STAGE = {k: cf.STAGE_KEYS.index(k) for k in cf.STAGE_KEYS}
FIRST = 2469  # first scored sample: not on any 30-s grid from the start
RUNS = ("wake", "wake", "nonrem2", "rem")  # one stage per scored 30-s epoch


@pytest.fixture(scope="module")
def cinc(tmp_path_factory):
  """A CinC-2018-format record (undefined lead-in, 4 scored epochs, undefined tail), its stage CSV
  and the original extraction's windows of it."""
  root = tmp_path_factory.mktemp("cinc")
  n = FIRST + 6000 * len(RUNS) + 1000
  stages = np.full(n, cf.UNDEFINED)
  for k, name in enumerate(RUNS):
    stages[FIRST + 6000 * k:FIRST + 6000 * (k + 1)] = _STAGE[name]
  hea = cf.write_record(root / "psg", "tr00-0001", cf.synthetic_signals(n, seed=2))
  cf.write_stage_csv(root / "psg" / "tr00-0001.csv", stages)
  windows, start, stage = cf.original_windows(hea, stages)
  assert windows.shape == (len(RUNS), 13, 7680)
  return {"root": root, "hea": hea, "windows": windows, "start": start, "stage": stage}


@pytest.mark.parametrize("n,fs_in,fs_out", [(1000, 200, 256), (1001, 200, 256), (777, 256, 200),
                                            (5000, 512, 256), (2, 100, 256), (640, 128, 100)])
def test_resample_fft_is_mne_raw_resample(n, fs_in, fs_out):
  import mne  # pylint: disable=import-outside-toplevel

  x = np.random.default_rng(n).normal(size=n).cumsum()
  want = mne.filter.resample(x, fs_out, fs_in, npad="auto", verbose="error")  # Raw.resample's
  got = sig.resample_fft(x, fs_in, fs_out, out_dtype=np.float64)
  assert got.shape == want.shape == (round(n * fs_out / fs_in),)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_raw_units_are_the_files_digital_values(cinc, tmp_path):
  rec = open_recording(cinc["hea"])
  val = scipy.io.loadmat(cinc["hea"].with_suffix(".mat"))["val"]
  for label in ("SaO2", "ECG", "C3-M2"):
    gain, offset = rec.digital_scale(label)
    assert (gain, offset) == cf.GAINS[label][:2]
    np.testing.assert_array_equal(units.to_digital(rec.read(label), gain, offset),
                                  val[cf.CHANNELS.index(label)])
  # EDF: the inverse of the physical/digital range scaling, whatever the ranges.
  rng = np.random.default_rng(0)
  path = write_edf(tmp_path / "a.edf", {"SpO2": (1.0, 90 + 5 * rng.random(60)),
                                        "ECG": (100.0, rng.normal(size=6000) * 0.4)})
  edf = open_recording(path)
  digital = {s.label: s.digital for s in edfio.read_edf(path).signals}
  for label in ("SpO2", "ECG"):
    np.testing.assert_array_equal(units.to_digital(edf.read(label), *edf.digital_scale(label)),
                                  digital[label])


def test_units_setting():
  units.validate("raw")
  units.validate({"resp": "raw", "SpO2": "physical"})
  with pytest.raises(ValueError, match="units must be one of"):
    preprocess.PreprocessConfig(units="counts")
  with pytest.raises(ValueError, match="resampler must be"):
    preprocess.PreprocessConfig(resampler="sinc")
  with pytest.raises(ValueError, match="alignment must be"):
    preprocess.PreprocessConfig(alignment="late")
  got = units.resolve({"resp": "raw", "SpO2": "physical"}, MONTAGES["paper"])
  assert got["Thorax"] == got["Abdomen"] == "raw" and got["SpO2"] == got["ECG"] == "physical"
  assert set(units.resolve(None, MONTAGES["paper"]).values()) == {"physical"}  # older settings


def test_paper_preset_store_holds_the_original_windows(cinc, tmp_path):
  """Preprocessing alone, paper preset: the store's windows are the original's, to float32."""
  from sleepfm_jax.configs import preprocess as presets  # pylint: disable=import-outside-toplevel

  specs, _ = discovery.discover([str(cinc["root"] / "psg")])
  report = preprocess.preprocess(specs, tmp_path / "store", presets.get_config("paper").to_dict(),
                                 progress=False)
  assert report["files"]["ok"] == 1, report
  store = WindowStore(tmp_path / "store")
  entry = store.recordings[0]
  assert entry["units"] == {c: "raw" for m in ("bas", "ecg", "resp")
                            for c in MONTAGES["paper"].channels(m)}
  assert store.index["preprocessing"]["units"] == "raw"
  # Windows: the store marks each at its epoch boundary, the original one 200-Hz sample later.
  np.testing.assert_allclose(store.get_batch(np.arange(len(store)))["start"] + 1 / cf.FS,
                             cinc["start"], atol=1e-9)
  batch = store.get_batch(np.arange(len(store)))
  want = cf.modality_inputs(cinc["windows"])
  for m, chans in cf.ORIGINAL_GROUPS.items():
    assert batch[f"mask_{m}"].all()
    np.testing.assert_allclose(batch[m], want[m], rtol=1e-6, atol=2e-3, err_msg=m)
  assert np.abs(batch["resp"][:, 1]).min() > 25_000  # SaO2 in ADC counts, not in %


# A narrow encoder with the original's seven MBConv stages: as sensitive to how windows are cut
# as the full one (each difference from the original's inputs alone costs a cosine below 0.999),
# and quick to compile.
TINY = dict(widths=(8, 8, 8, 16, 16, 16, 24, 24), depths=(1, 2, 1, 2, 1, 1, 2), head_width=32,
            embed_dim=16)


def test_embed_reproduces_the_original_on_a_cinc_record(cinc, tmp_path):
  """Original-format .pt -> converted checkpoint -> `sleepfm_jax.embed` of the CinC record with
  the paper preset, against the PyTorch encoders on the original extraction's windows."""
  torch = pytest.importorskip("torch")
  import sleepfm_jax  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.configs import preprocess as presets  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.configs import pretrain  # pylint: disable=import-outside-toplevel
  from sleepfm_jax import export
  from sleepfm_jax.training import convert, torch_reference  # pylint: disable=import-outside-toplevel

  inputs = cf.modality_inputs(cinc["windows"])
  keys = {"resp": "respiratory", "bas": "sleep_stages", "ecg": "ekg"}
  models, save = {}, {"temperature": 0.0, "epoch": 1}
  for i, (m, key) in enumerate(keys.items()):
    torch.manual_seed(i)
    model = torch_reference.build_effnet(inputs[m].shape[1], **TINY)
    torch_reference.randomise_batch_stats(model, i)
    # BN statistics of the original's inputs (raw counts), as a model trained on them has.
    torch_reference.calibrate_batch_stats(model, torch.from_numpy(inputs[m]))
    models[m] = model.eval()
    save[f"{key}_state_dict"] = {f"module.{k}": v for k, v in model.state_dict().items()}
  torch.save(save, tmp_path / "best.pt")
  config = pretrain.get_config("paper")
  config.model.update(TINY)
  ckpt = tmp_path / "converted"
  convert.original_checkpoint_to_orbax(tmp_path / "best.pt", ckpt, config=config,
                                       preprocessing=presets.get_config("paper").to_dict())

  es = sleepfm_jax.embed(str(cinc["root"] / "psg"), checkpoint=str(ckpt), batch_size=8,
                         out_dir=str(tmp_path / "out"), progress=False)
  assert len(es) == len(RUNS)
  np.testing.assert_allclose(es.start + 1 / cf.FS, cinc["start"], atol=1e-9)  # same windows
  with torch.no_grad():
    for m, model in models.items():
      want = torch.nn.functional.normalize(model(torch.from_numpy(inputs[m]))).numpy()
      cos = np.sum(es.emb[m] * want, axis=1)
      assert cos.min() >= 0.999, (m, cos)
  # The same weights refuse a store in other units than they were converted for.
  physical = {**presets.get_config("paper").to_dict(), "units": "physical"}
  specs, _ = discovery.discover([str(cinc["root"] / "psg")])
  preprocess.preprocess(specs, tmp_path / "physical", physical, progress=False)
  with pytest.raises(ValueError, match=r"units differ .* SpO2 is physical in the store, raw for"):
    export.export_store(str(ckpt), str(tmp_path / "physical"), str(tmp_path / "emb"),
                        progress=False)
