"""Test-wide settings.

Eight simulated CPU devices are configured before jax is first used, so that sharding tests can
build 8-device meshes; single-device code still runs on device 0.
"""

import os
import pathlib
import tempfile

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# Many tests compile the same small models (also in subprocesses, which inherit these variables):
# JAX's persistent compilation cache turns a repeat compilation of ~25 s into ~5 s on 2 cores.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "sleepfm-jax-test-compilation-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

REPO = pathlib.Path(__file__).resolve().parents[1]
# Command lines run in subprocesses import this checkout's package, also where an installed copy
# (e.g. an editable install of another checkout) would come first.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
REAL_DATA = REPO.parent / "shared" / "data" / "psg-real"
SC4001_PSG = REAL_DATA / "sleep-edfx" / "sleep-cassette" / "SC4001E0-PSG.edf"
SC4001_HYP = REAL_DATA / "sleep-edfx" / "sleep-cassette" / "SC4001EC-Hypnogram.edf"
SLPDB = REAL_DATA / "slpdb-annotations-only"


def require_real_data(path: pathlib.Path) -> pathlib.Path:
  """Returns `path`, or skips the test when the shared real data is absent (never under CI)."""
  if path.exists():
    return path
  if os.environ.get("CI"):
    raise FileNotFoundError(f"real PSG data missing under CI: {path}")
  pytest.skip(f"real PSG data not present: {path}")
  return path  # unreachable


@pytest.fixture(scope="session")
def sc4001():
  """Paths of the real Sleep-EDF SC4001 PSG and hypnogram files."""
  return require_real_data(SC4001_PSG), require_real_data(SC4001_HYP)


@pytest.fixture(scope="session")
def slpdb_dir():
  return require_real_data(SLPDB)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> str:
  """A small SYNTHETIC three-modality window store at 32 Hz: 6 subjects x 45 min, one subject
  without ECG (from `experiments/make_synthetic.py`'s generator)."""
  from sleepfm_jax.data import discovery, synthetic  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.preprocess import preprocess  # pylint: disable=import-outside-toplevel

  root = tmp_path_factory.mktemp("synthetic")
  synthetic.write_dataset(root / "edf", n_subjects=6, hours=0.75, seed=3, progress=False,
                          rates="eeg=64,eog=64,emg=64,ecg=128,resp=16,spo2=1")
  specs, _ = discovery.discover([str(root / "edf")])
  report = preprocess(specs, root / "store", {"sample_rate": 32, "montage": "standard",
                                              "dtype": "float32", "sdb_scored": "yes"},
                      progress=False)
  assert report["files"]["ok"] == 6, report
  return str(root / "store")


@pytest.fixture(scope="session")
def synthetic_run(synthetic_store, tmp_path_factory):
  """A tiny pairwise model pretrained for 6 steps on `synthetic_store`: (workdir, config, summary)."""
  import train_utils as tu  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import train  # pylint: disable=import-outside-toplevel

  cfg = tu.tiny_config(synthetic_store, preset="demo", total_steps=6, eval_every=6,
                       **{"loss.mode": "pairwise"})
  workdir = tmp_path_factory.mktemp("synthetic_run") / "run"
  summary = train.train(cfg, str(workdir))
  return workdir, cfg, summary
