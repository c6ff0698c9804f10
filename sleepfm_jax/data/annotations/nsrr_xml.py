"""NSRR XML (`<PSGAnnotation>`): the annotation files of SHHS, MESA, MrOS, CFS, CHAT, CCSHS, SOF...

`<ScoredEvents>` holds `<ScoredEvent>`s with `<EventConcept>`, `<Start>` and `<Duration>` (seconds)
and, in today's files, `<EventType>`. Two vocabularies:

* today's `name|code` pairs: `<EventType>Stages|Stages</EventType>` with concepts `Wake|0`,
  `Stage 1 sleep|1` ... `Stage 4 sleep|4`, `REM sleep|5`, `Movement|6`, `Unscored|9`,
  `Artifact|10`; other types (`Respiratory|Respiratory`, `Arousals|Arousals`, ...) with
  `Obstructive apnea|Obstructive Apnea`, `Hypopnea|Hypopnea`, `Arousal|Arousal ()`, ...;
* the ontology terms of older translator output: `SDO:WakeState`,
  `SDO:NonRapidEyeMovementSleep-N1..N4`, `SDO:RapidEyeMovementSleep`, `SDO:HypopneaFinding`,
  `SDO:ObstructiveApneaFinding`, `SDO:SleepArousalFinding`, ... (and `SRO:` terms).

Stage events are runs that must last a whole number of epochs. A concept the vocabulary does not
know is counted in `Annotations.unknown` (a stage-type one leaves its epochs unscored), never
mapped by guessing.
"""

from __future__ import annotations

import collections

from sleepfm_jax.data.annotations import _xml, core
from sleepfm_jax.data.errors import PSGError

FORMAT = "nsrr-xml"
EXTENSIONS = (".xml",)
ROOT = "PSGAnnotation"


def sniff(path: str) -> bool:
  return _xml.root_tag(path) == ROOT


def _stage(concept: str, event_type: str | None) -> int | None:
  """Stage code of a concept, or None when it is not a stage concept of the vocabulary."""
  code = core.stage_code(concept) if (
      event_type is None or event_type.startswith("stages")
      or concept.upper().startswith(("SDO:", "SRO:"))) else None
  if code is None and _xml.key(concept) in ("artifact|10", "sro:artifactepoch") and (
      event_type is None or event_type.startswith("stages")):
    code = -1
  return code


def read(path: str, epoch_len: float) -> core.Annotations:
  root, lines = _xml.parse(path)
  if root.tag != ROOT:
    raise PSGError(path, f"root element is <{root.tag}>, not <{ROOT}>: not an NSRR XML file")
  issues = _xml.check_epoch_length(root, lines, path, epoch_len)
  scored = root.find("ScoredEvents")
  if scored is None:
    raise PSGError(path, "no <ScoredEvents>")
  runs, events, unknown = [], [], collections.Counter()
  for el in scored.iter("ScoredEvent"):
    where = f"line {lines.get(id(el), '?')}"
    concept = _xml.text(el, "EventConcept")
    if not concept:
      raise PSGError(path, f"{where}: <ScoredEvent> without <EventConcept>")
    if _xml.key(concept) in _xml.META:
      continue
    etype = _xml.text(el, "EventType")
    etype = _xml.key(etype) if etype else None
    onset = _xml.number(el, "Start", path, where)
    duration = _xml.number(el, "Duration", path, where, default=0.0)
    if duration < 0:
      raise PSGError(path, f"{where}: negative <Duration> {duration:g}")
    code = _stage(concept, etype)
    if code is not None:
      runs.append(core.StageRun(onset, duration, code, concept, where))
      continue
    kind = _xml.event_kind(*concept.split("|"))
    if kind is None:
      unknown[concept] += 1
      if etype is not None and etype.startswith("stages"):
        issues.append(f"{where}: unknown stage concept '{concept}': its epochs are left unscored")
        continue
    events.append(core.Event(onset, duration, kind or "other", concept))
  return core.assemble(runs, events, path, epoch_len=epoch_len, strict=True, unknown=unknown,
                       issues=issues)
