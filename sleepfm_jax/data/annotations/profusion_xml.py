"""Compumedics Profusion XML (`<CMPStudyConfig>`), the scoring export NSRR cohorts also ship.

`<SleepStages>` holds one `<SleepStage>` integer per epoch from the recording start: 0 wake, 1-4
R&K stages 1-4, 5 REM, 6 movement, 9 unscored, 10 artifact. `<ScoredEvents>` holds
`<ScoredEvent>`s with `<Name>` (e.g. `Obstructive Apnea`, `Hypopnea`, `Arousal ()`, `SpO2
desaturation`), `<Start>` and `<Duration>` in seconds. Stage integers and event names outside the
vocabulary are counted in `Annotations.unknown` (an unknown stage leaves its epoch unscored).
Stage labels are kept in NSRR's `name|code` spelling (`Stage 2 sleep|2`).
"""

from __future__ import annotations

import collections

from sleepfm_jax.data.annotations import _xml, core
from sleepfm_jax.data.errors import PSGError

FORMAT = "profusion-xml"
EXTENSIONS = (".xml",)
ROOT = "CMPStudyConfig"
STAGE_LABELS = {
    "0": "Wake|0", "1": "Stage 1 sleep|1", "2": "Stage 2 sleep|2", "3": "Stage 3 sleep|3",
    "4": "Stage 4 sleep|4", "5": "REM sleep|5", "6": "Movement|6", "9": "Unscored|9",
    "10": "Artifact|10",
}


def sniff(path: str) -> bool:
  return _xml.root_tag(path) == ROOT


def _stage_runs(root, lines, path: str, epoch_len: float, unknown, issues) -> list[core.StageRun]:
  stages = root.find("SleepStages")
  if stages is None:
    raise PSGError(path, "no <SleepStages>")
  runs = []
  for k, el in enumerate(stages.iter("SleepStage")):
    value = (el.text or "").strip()
    where = f"line {lines.get(id(el), '?')} (epoch {k})"
    label = STAGE_LABELS.get(value)
    if label is None:
      unknown[f"SleepStage {value}"] += 1
      issues.append(f"{where}: unknown stage value {value!r}: the epoch is left unscored")
      continue
    code = -1 if value == "10" else core.stage_code(label)
    runs.append(core.StageRun(k * epoch_len, epoch_len, code, label, where))
  return runs


def read(path: str, epoch_len: float) -> core.Annotations:
  root, lines = _xml.parse(path)
  if root.tag != ROOT:
    raise PSGError(path, f"root element is <{root.tag}>, not <{ROOT}>: not a Profusion XML file")
  issues = _xml.check_epoch_length(root, lines, path, epoch_len)
  unknown: collections.Counter = collections.Counter()
  runs = _stage_runs(root, lines, path, epoch_len, unknown, issues)
  events = []
  for el in root.iterfind("ScoredEvents/ScoredEvent"):
    where = f"line {lines.get(id(el), '?')}"
    name = _xml.text(el, "Name")
    if not name:
      raise PSGError(path, f"{where}: <ScoredEvent> without <Name>")
    onset = _xml.number(el, "Start", path, where)
    duration = _xml.number(el, "Duration", path, where, default=0.0)
    if duration < 0:
      raise PSGError(path, f"{where}: negative <Duration> {duration:g}")
    kind = _xml.event_kind(name)
    if kind is None:
      unknown[name] += 1
    events.append(core.Event(onset, duration, kind or "other", name))
  return core.assemble(runs, events, path, epoch_len=epoch_len, strict=True, unknown=unknown,
                       issues=issues)
