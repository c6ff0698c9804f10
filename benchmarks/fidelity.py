r"""How close `sleepfm_jax.embed` comes to the original SleepFM's embeddings, setting by setting.

A CinC-2018-format record (SYNTHETIC signals at 200 Hz written with the challenge's header gains,
`tests/cinc_files.py`) is cut into windows the way the original's `0_extract_pretraining_data.py`
cuts them (emulated step by step with MNE). Encoders of the paper's full architecture with random
weights (BN running statistics calibrated on those windows, as a model trained on them would
have) embed them in PyTorch: the reference. The same weights, converted with
`convert.original_checkpoint_to_orbax` under each preprocessing variant below, embed the record
through `sleepfm_jax.embed`. Reported per variant and modality: cosine to the reference (min and
mean over windows) and, for the modality's worst channel, the RMS input difference relative to the
reference's RMS about its window means.

Variants: the `paper` preset (`preprocess.ORIGINAL_INPUTS`: raw units, FFT resampling, the
original's alignment) and the same with one setting at a time set back to this project's default,
and the paper preset as it was before (physical units, polyphase, epoch-aligned).

  python benchmarks/fidelity.py --windows 20 --out benchmarks/results/fidelity.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
from common import REPO, host_info

sys.path.insert(0, str(REPO / "tests"))
import cinc_files as cf  # noqa: E402  (the CinC writer and the original's extraction)

VARIANTS = {
    "paper (raw, fft, original alignment)": {},
    "physical units": {"units": "physical"},
    "polyphase resampler": {"resampler": "polyphase"},
    "epoch alignment": {"alignment": "epoch"},
    "before: physical, polyphase, epoch": {"units": "physical", "resampler": "polyphase",
                                           "alignment": "epoch"},
}
_CYCLE = ("wake", "nonrem1", "nonrem2", "nonrem2", "nonrem3", "rem")


def make_record(root: pathlib.Path, windows: int, first: int, seed: int):
  n = first + 6000 * windows + 1000
  stages = np.full(n, cf.UNDEFINED)
  for k in range(windows):
    stages[first + 6000 * k:first + 6000 * (k + 1)] = cf.STAGE_KEYS.index(_CYCLE[k % 6])
  hea = cf.write_record(root / "psg", "tr00-0001", cf.synthetic_signals(n, seed=seed))
  cf.write_stage_csv(root / "psg" / "tr00-0001.csv", stages)
  return hea, stages


def reference(inputs, seed: int):
  """Full-size PyTorch encoders, random, BN calibrated on the original's inputs; their unit
  embeddings; and the `.pt` state to convert."""
  from sleepfm_jax.training import torch_reference  # pylint: disable=import-outside-toplevel

  torch = torch_reference.import_torch()
  keys = {"resp": "respiratory", "bas": "sleep_stages", "ecg": "ekg"}
  save, want = {"temperature": 0.0, "epoch": 1}, {}
  for i, (m, key) in enumerate(keys.items()):
    torch.manual_seed(seed + i)
    model = torch_reference.build_effnet(inputs[m].shape[1])
    torch_reference.randomise_batch_stats(model, seed + i)
    torch_reference.calibrate_batch_stats(model, torch.from_numpy(inputs[m]))
    model.eval()
    with torch.no_grad():
      want[m] = torch.nn.functional.normalize(model(torch.from_numpy(inputs[m]))).numpy()
    save[f"{key}_state_dict"] = {f"module.{k}": v for k, v in model.state_dict().items()}
  return want, save


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--windows", type=int, default=20)
  parser.add_argument("--first", type=int, default=2469, help="first scored sample (200 Hz)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  import torch  # pylint: disable=import-outside-toplevel

  import sleepfm_jax  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.configs import preprocess as presets  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.configs import pretrain  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.training import convert  # pylint: disable=import-outside-toplevel
  from sleepfm_jax.data.store import WindowStore  # pylint: disable=import-outside-toplevel

  tmp = pathlib.Path(tempfile.mkdtemp(prefix="sleepfm-fidelity-"))
  hea, stages = make_record(tmp, args.windows, args.first, args.seed)
  windows, start, _ = cf.original_windows(hea, stages)
  inputs = cf.modality_inputs(windows)
  want, save = reference(inputs, args.seed)
  torch.save(save, tmp / "best.pt")
  results = {}
  for name, overrides in VARIANTS.items():
    prep = {**presets.get_config("paper").to_dict(), **overrides}
    ckpt = tmp / f"ckpt-{len(results)}"
    convert.original_checkpoint_to_orbax(tmp / "best.pt", ckpt, config=pretrain.get_config("paper"),
                                         preprocessing=prep)
    out = tmp / f"out-{len(results)}"
    es = sleepfm_jax.embed(str(tmp / "psg"), checkpoint=str(ckpt), batch_size=8,
                           out_dir=str(out), progress=False)
    # Same windows: ours are stamped at the epoch boundary, the original's one sample later.
    assert np.allclose(es.start + 1 / cf.FS, start, atol=1e-9), (es.start, start)
    batch = WindowStore(out / "store").get_batch(np.arange(len(es)))
    row = {}
    for m in want:
      cos = np.sum(es.emb[m] * want[m], axis=1)
      # Per channel: RMS input difference / RMS of the reference about its window means.
      ac = inputs[m] - inputs[m].mean(axis=-1, keepdims=True)
      rel = np.sqrt(np.mean((batch[m] - inputs[m]) ** 2, axis=(0, 2))
                    / np.mean(ac ** 2, axis=(0, 2)))
      row[m] = {"cos_min": round(float(cos.min()), 6), "cos_mean": round(float(cos.mean()), 6),
                "input_rms_rel_max_channel": round(float(rel.max()), 6)}
    results[name] = {"overrides": overrides, **row}
    print(name, json.dumps(row))
  report = {"benchmark": "fidelity", "record": {"format": "CinC-2018 (SYNTHETIC signals)",
                                                "windows": len(start), "first_scored_sample":
                                                args.first, "seed": args.seed},
            "architecture": "paper (full EffNet-1D), random weights, BN calibrated on the "
                            "original's inputs", "variants": results, "host": host_info()}
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
  main()
