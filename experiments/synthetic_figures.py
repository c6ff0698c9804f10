"""Documentation figures for the SYNTHETIC PSG generator (docs/figures/synthetic_*.png).

Run through `python experiments/make_synthetic.py --figures_dir=docs/figures`.
"""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402

from sleepfm_jax.data import synthetic  # noqa: E402

_STAGE_NAMES = {0: "Wake (W)", 1: "N1", 2: "N2", 3: "N3", 4: "REM (R)"}
_BAS_ROWS = (("C3-M2", 150.0), ("O1-M2", 150.0), ("E1-M2", 300.0), ("E2-M1", 300.0),
             ("Chin", 40.0))
_EVENT_COLOURS = {"obstructive_apnea": "tab:red", "central_apnea": "tab:purple",
                  "hypopnea": "tab:orange", "arousal": "tab:green", "desaturation": "tab:blue"}


def _pick_subject(seed: int) -> synthetic.SubjectParams:
  """The first subject with moderate-severe SDB and a real share of central apneas."""
  for i in range(500):
    p = synthetic.sample_subject(i, seed, missing_prob=0.0, distractor_prob=0.0)
    if p.ahi > 25 and 0.2 < p.central_fraction < 0.7:
      return p
  raise RuntimeError("no suitable subject found")


def _excerpt(night, canonical, t0, t1):
  x, fs = night.channel(canonical)
  a, b = int(t0 * fs), int(t1 * fs)
  return np.arange(a, b) / fs - t0, x[a:b]


def _stage_window(night, stage):
  """60 s centred in the longest run of `stage`."""
  st = night.stages
  best, best_len, i = None, 0, 0
  while i < st.size:
    j = i
    while j < st.size and st[j] == st[i]:
      j += 1
    if st[i] == stage and j - i > best_len:
      best, best_len = i, j - i
    i = j
  if best is None:
    return None
  mid = (best + best_len / 2) * synthetic.EPOCH_SECONDS
  t0 = max(0.0, min(mid - 30.0, night.duration - 60.0))
  return t0, t0 + 60.0


def _stage_figure(night, stage, path):
  win = _stage_window(night, stage)
  if win is None:
    return None
  rows = _BAS_ROWS[:1] + (("sigma", 40.0),) + _BAS_ROWS[1:]
  fig, axes = plt.subplots(len(rows), 1, figsize=(11, 7.5), sharex=True)
  for ax, (name, lim) in zip(axes, rows, strict=True):
    if name == "sigma":  # spindles are easier to see in their own band
      x, fs = night.channel("C3-M2")
      sos = scipy.signal.butter(4, [11.0, 16.0], "bandpass", fs=fs, output="sos")
      a, b = int(win[0] * fs), int(win[1] * fs)
      pad = int(5 * fs)
      y = scipy.signal.sosfiltfilt(sos, x[max(a - pad, 0):b + pad])[a - max(a - pad, 0):][:b - a]
      ax.plot(np.arange(b - a) / fs, y, lw=0.5, color="tab:blue")
      ax.set_ylim(-lim, lim)
      ax.set_ylabel("C3 11-16 Hz\n(spindles, uV)", rotation=0, ha="right", va="center",
                    fontsize=8)
      ax.tick_params(labelsize=7)
      ax.grid(alpha=0.2)
      ax.axvline(30 - (win[0] % 30), color="0.6", lw=0.6, ls="--")
      continue
    t, x = _excerpt(night, name, *win)
    ax.plot(t, x, lw=0.5, color="k")
    ax.set_ylim(-lim, lim)
    ax.set_ylabel(f"{night.label_of(name)}\n(uV)", rotation=0, ha="right", va="center",
                  fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.2)
    ax.axvline(30 - (win[0] % 30), color="0.6", lw=0.6, ls="--")
  axes[-1].set_xlabel(f"seconds from {win[0]:.0f} s (dashed: 30-s epoch boundary)")
  fig.suptitle(f"SYNTHETIC PSG - stage {_STAGE_NAMES[stage]}: 60-s excerpt, "
               f"{night.recording_id}", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _heart_rate(night, t0, t1):
  """Beat-to-beat heart rate from R peaks of the synthetic ECG (implausible intervals dropped)."""
  x, fs = night.channel("ECG")
  a, b = int(t0 * fs), int(t1 * fs)
  seg = x[a:b]
  sign = 1.0 if np.abs(np.percentile(seg, 99.9)) >= np.abs(np.percentile(seg, 0.1)) else -1.0
  peaks, _ = scipy.signal.find_peaks(sign * seg, distance=int(0.4 * fs),
                                     prominence=0.5 * np.percentile(sign * seg, 99.5))
  tp = peaks / fs
  rr = np.diff(tp)
  ok = (rr > 0.4) & (rr < 2.0)
  return tp[1:][ok], 60.0 / rr[ok]


def _event_strip(ax, night, t0, t1):
  kinds = list(_EVENT_COLOURS)
  for row, k in enumerate(kinds):
    for o, d, kk in night.events:
      if kk == k and o < t1 and o + d > t0:
        ax.plot([max(o, t0) - t0, min(o + d, t1) - t0], [row, row], color=_EVENT_COLOURS[k],
                lw=6, solid_capstyle="butt")
  ax.set_yticks(range(len(kinds)), [synthetic.EVENT_LABELS[k] for k in kinds], fontsize=7)
  ax.set_ylim(-0.7, len(kinds) - 0.3)
  ax.set_title("scored events (annotation file)", fontsize=8, loc="left")


def _event_figure(night, kind, path):
  events = [e for e in night.events if e[2] == kind and 25 < e[1] < 45]
  events = events or [e for e in night.events if e[2] == kind]
  if not events:
    return None
  onset, dur, _ = events[len(events) // 2]
  t0, t1 = onset - 45.0, onset + dur + 60.0
  fig, axes = plt.subplots(6, 1, figsize=(11, 9), sharex=True,
                           gridspec_kw={"height_ratios": [1.3, 1, 1.2, 1, 1, 1]})
  _event_strip(axes[0], night, t0, t1)
  t, x = _excerpt(night, "Airflow", t0, t1)
  axes[1].plot(t, x, lw=0.8, color="k")
  axes[1].set_ylabel(f"{night.label_of('Airflow')}\n(a.u.)", fontsize=8)
  for name, colour in (("Thorax", "tab:blue"), ("Abdomen", "tab:orange")):
    t, x = _excerpt(night, name, t0, t1)
    axes[2].plot(t, x / np.percentile(np.abs(x), 95), lw=0.8, color=colour,
                 label=f"{night.label_of(name)} ({name.lower()})")
  axes[2].legend(fontsize=7, loc="upper left", ncol=2)
  axes[2].set_ylabel("effort belts\n(normalised)", fontsize=8)
  t, x = _excerpt(night, "SpO2", t0, t1)
  axes[3].plot(t, x, lw=1.0, color="tab:blue")
  axes[3].set_ylabel(f"{night.label_of('SpO2')}\n(%)", fontsize=8)
  t, x = _excerpt(night, "ECG", t0, t1)
  axes[4].plot(t, x, lw=0.3, color="k")
  axes[4].set_ylabel(f"{night.label_of('ECG')}\n(mV)", fontsize=8)
  t, hr = _heart_rate(night, t0, t1)
  axes[5].plot(t, hr, ".-", lw=0.8, ms=2, color="k")
  axes[5].set_ylabel("HR from ECG\nR peaks (bpm)", fontsize=8)
  for ax in axes[1:]:
    ax.axvspan(onset - t0, onset + dur - t0, color=_EVENT_COLOURS[kind], alpha=0.12)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.2)
  label = synthetic.EVENT_LABELS[kind].lower()
  axes[-1].set_xlabel(f"seconds from {t0:.0f} s (shaded: the {label})")
  fig.suptitle(f"SYNTHETIC PSG - {synthetic.EVENT_LABELS[kind].lower()} ({dur:.0f} s), "
               f"{night.recording_id}", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _hypnogram_figure(night, path):
  fig, axes = plt.subplots(3, 1, figsize=(11, 6), sharex=True,
                           gridspec_kw={"height_ratios": [2.2, 1.4, 1.4]})
  hours = np.arange(night.n_epochs + 1) * synthetic.EPOCH_SECONDS / 3600.0
  order = {0: 4, 4: 3, 1: 2, 2: 1, 3: 0}  # W top, then REM, N1, N2, N3 (usual layout)
  y = np.array([order[int(s)] for s in night.stages])
  axes[0].step(hours, np.r_[y, y[-1]], where="post", color="k", lw=0.9)
  rem = night.stages == synthetic.REM
  axes[0].fill_between(hours[:-1], 2.8, 3.2, where=rem, step="post", color="tab:red", alpha=0.6)
  axes[0].set_yticks([0, 1, 2, 3, 4], ["N3", "N2", "N1", "REM", "W"])
  axes[0].set_ylim(-0.5, 4.5)
  axes[0].set_title(f"SYNTHETIC hypnogram, {night.recording_id}: TST "
                    f"{night.info['tst_h']:.1f} h, SE {night.info['sleep_efficiency']:.0%}, "
                    f"AHI {night.info['ahi']:.1f}/h", fontsize=10)
  kinds = list(_EVENT_COLOURS)
  for row, k in enumerate(kinds):
    for o, d, kk in night.events:
      if kk == k:
        axes[1].plot([o / 3600, (o + d) / 3600], [row, row], color=_EVENT_COLOURS[k], lw=5)
  axes[1].set_yticks(range(len(kinds)), [synthetic.EVENT_LABELS[k] for k in kinds], fontsize=7)
  axes[1].set_ylim(-0.7, len(kinds) - 0.3)
  x, fs = night.channel("SpO2")
  axes[2].plot(np.arange(x.size) / fs / 3600, x, lw=0.5, color="tab:blue")
  axes[2].set_ylabel("SpO2 (%)", fontsize=8)
  axes[2].set_xlabel("hours from recording start")
  for ax in axes:
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def render_all(figures_dir, seed: int = 0, hours: float = 8.0):
  """Renders every figure; returns the written paths."""
  out = pathlib.Path(figures_dir)
  out.mkdir(parents=True, exist_ok=True)
  p = _pick_subject(seed)
  night = synthetic.generate_night(p, hours=hours, seed=synthetic.night_seed(seed, p.index, 1))
  paths = []
  for stage, name in enumerate(synthetic.STAGES):
    paths.append(_stage_figure(night, stage, out / f"synthetic_stage_{name}.png"))
  paths.append(_event_figure(night, "obstructive_apnea", out / "synthetic_obstructive_apnea.png"))
  paths.append(_event_figure(night, "central_apnea", out / "synthetic_central_apnea.png"))
  paths.append(_hypnogram_figure(night, out / "synthetic_hypnogram.png"))
  return [str(x) for x in paths if x is not None]


__all__ = ["render_all"]
