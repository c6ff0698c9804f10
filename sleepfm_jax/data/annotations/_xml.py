"""What the two XML formats share: a parser that remembers line numbers, the epoch-length check,
and the vocabulary of scored-event names (NSRR and Compumedics Profusion).

The vocabulary is explicit: a name that is not listed is *unknown*, kept as an event of kind
"other" and counted in `Annotations.unknown`, never matched by guessing. It covers the names of
the NSRR EDF Editor and Translator's Compumedics mapping (today's `name|Profusion name` pairs), the
Profusion names themselves, and the ontology terms of older translator output (`SDO:...`) and of
some cohorts (`SRO:...`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.parsers import expat

from sleepfm_jax.data.errors import PSGError

_A, _C, _M, _H = "arousal", "central_apnea", "mixed_apnea", "hypopnea"
_O, _D, _L, _X = "obstructive_apnea", "desaturation", "leg_movement", "other"
_NAMES = {
    # respiratory
    _O: ["obstructive apnea", "sdo:obstructiveapneafinding", "sro:obstructiveapnea"],
    _C: ["central apnea", "sdo:centralapneafinding", "sro:centralapnea"],
    _M: ["mixed apnea", "sdo:mixedapneafinding", "sro:mixedapnea"],
    "apnea": ["apnea"],
    _H: ["hypopnea", "obstructive hypopnea", "central hypopnea", "mixed hypopnea",
         "sdo:hypopneafinding", "sro:hypopnea", "sro:obstructivehypopnea", "sro:centralhypopnea",
         "sro:mixedhypopnea"],
    _D: ["spo2 desaturation", "sdo:hemoglobinoxygendesaturationfinding", "sro:spo2desaturation"],
    # arousals (RERA: the arousal that ends a respiratory-effort event)
    _A: ["arousal", "arousal ()", "arousal (apnea)", "arousal (desat)", "arousal (limb)",
         "arousal (respiratory)", "arousal (spontaneous)", "arousal (asda)", "arousal (aro limb)",
         "arousal (aro res)", "arousal (ares)", "arousal (api)", "arousal (external arousal)",
         "arousal (internal arousal)", "arousal resulting from apnea",
         "arousal resulting from spo2 desaturation", "arousal resulting from periodic leg movement",
         "arousal resulting from limb movement", "arousal resulting from respiratory effort",
         "arousal resulting from snoring", "respiratory effort related arousal",
         "spontaneous arousal", "asda arousal", "external arousal", "internal arousal", "rera",
         "sdo:sleeparousalfinding", "sro:arousal", "sro:arousalapnea", "sro:arousaldesaturation",
         "sro:arousallm", "sro:arousalrespiratory", "sro:arousalspontaneous",
         "sro:respiratoryeventrelatedarousal"],
    # limb movements
    _L: ["leg movement", "respiratory related leg movement", "periodic leg movement",
         "periodic leg movement - left", "periodic leg movement - right", "limb movement - left",
         "limb movement - right", "plm (left)", "plm (right)", "limb movement (left)",
         "limb movement (right)", "sdo:leftlowerlimbmovementduringsleep",
         "sdo:rightlowerlimbmovementduringsleep", "sdo:periodicleftlowerlimbmovementduringsleep",
         "sdo:periodicrightlowerlimbmovementduringsleep", "sro:periodiclimbmovementseriesleft",
         "sro:periodiclimbmovementseriesright", "sro:limbmovementleft", "sro:limbmovementright"],
    # known, and not used for labels: "unsure" is the translator's ambiguous respiratory event
    _X: ["unsure", "snoring", "snore", "respiratory paradox", "periodic breathing",
         "cheyne stokes breathing", "respiratory artifact", "spo2 artifact", "signalartifactevent",
         "oximetry artifact event", "sdo:polysomnographyfinding", "sdo:electrocardiographyfinding",
         "bradycardia", "tachycardia", "asystole", "wide complex tachycardia",
         "narrow complex tachycardia", "atrial fibrillation", "sinus tachycardia",
         "body position change to supine", "body position change to prone",
         "body position change to left", "body position change to right",
         "body position change to upright", "body position change to unknown", "activity",
         "distal ph", "proximal ph", "distal ph artifact", "proximal ph artifact",
         "etco2 artifact", "tcco2 artifact", "tcc02 artifact", "blood pressure artifact",
         "body temperature artifact", "signal artifact", "reserved selection",
         "beginning of time in bed", "end of time in bed", "beginning of analysis period",
         "end of analysis period", "sro:spo2artifact", "sro:snore", "sro:paradoxicalbreathing",
         "sro:cheynestokesbreathing", "sro:respiratoryartifact", "sro:bradycardia",
         "sro:tachycardia", "sro:asystole", "sro:narrowcomplextachycardia",
         "sro:widecomplextachycardia", "sro:atrialfibrillation"],
}
EVENT_NAMES = {name: kind for kind, names in _NAMES.items() for name in names}
# Not an event: the translator's record of the recording's start (its Duration is the recording).
META = frozenset({"recording start time"})


def key(label: str) -> str:
  """Vocabulary key: lower case, whitespace runs collapsed."""
  return re.sub(r"\s+", " ", label.strip().lower())


def event_kind(*names: str) -> str | None:
  """Kind of the first of `names` that the vocabulary knows, or None (unknown)."""
  for name in names:
    kind = EVENT_NAMES.get(key(name))
    if kind is not None:
      return kind
  return None


def parse(path: str) -> tuple[ET.Element, dict[int, int]]:
  """(root element, {id(element): line}) of an XML file.

  Raises:
    PSGError: missing file, or malformed XML (naming line and column).
  """
  builder = ET.TreeBuilder()
  lines: dict[int, int] = {}
  parser = expat.ParserCreate()
  parser.StartElementHandler = lambda tag, attrs: lines.__setitem__(
      id(builder.start(tag, attrs)), parser.CurrentLineNumber)
  parser.EndElementHandler = builder.end
  parser.CharacterDataHandler = builder.data
  try:
    with open(path, "rb") as f:
      parser.ParseFile(f)
    root = builder.close()
  except FileNotFoundError:
    raise PSGError(path, "file not found") from None
  except expat.ExpatError as e:
    raise PSGError(path, f"malformed XML at line {e.lineno}, column {e.offset + 1}: "
                   f"{expat.ErrorString(e.code)}") from None
  return root, lines


def root_tag(path: str) -> str | None:
  """The root element's name (reads only up to it), or None when unreadable."""
  parser = expat.ParserCreate()
  found: list[str] = []

  def start(tag, _):
    found.append(tag)
    raise StopIteration

  parser.StartElementHandler = start
  try:
    with open(path, "rb") as f:
      while not found and (chunk := f.read(4096)):
        parser.Parse(chunk, False)
  except (StopIteration, OSError, expat.ExpatError):
    pass
  return found[0] if found else None


def text(el: ET.Element, tag: str) -> str | None:
  child = el.find(tag)
  return None if child is None or child.text is None else child.text.strip()


def number(el: ET.Element, tag: str, path: str, where: str, default: float | None = None) -> float:
  """The number in child `tag` of `el`; `default` when absent (an error when no default)."""
  value = text(el, tag)
  if value is None or value == "":
    if default is not None:
      return default
    raise PSGError(path, f"{where}: <{el.tag}> has no <{tag}>")
  try:
    return float(value)
  except ValueError:
    raise PSGError(path, f"{where}: <{tag}> is not a number: {value!r}") from None


def check_epoch_length(root: ET.Element, lines: dict[int, int], path: str,
                       epoch_len: float) -> list[str]:
  """Raises unless <EpochLength> is `epoch_len`; returns an issue line when the file has none."""
  el = root.find("EpochLength")
  if el is None:
    return [f"no <EpochLength>: epochs taken to be {epoch_len:g} s"]
  value = number(root, "EpochLength", path, f"line {lines.get(id(el), '?')}")
  if abs(value - epoch_len) > 1e-9:
    raise PSGError(path, f"line {lines.get(id(el), '?')}: <EpochLength> is {value:g} s; these "
                   f"annotations are read on {epoch_len:g}-s epochs (the window length)")
  return []

