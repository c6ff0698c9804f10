"""The one exception type for bad PSG input.

Batch jobs (preprocessing, discovery) catch `PSGError`, record the file as skipped with the message,
and carry on with the next file. Every message starts with the file path and, where one channel
is at fault, that channel's label, so that a report line alone says where to look.
"""

from __future__ import annotations

import os


class PSGError(ValueError):
  """Bad or unsupported PSG input: `str(e)` is `"{path}: channel '{channel}': {message}"`.

  Attributes:
    path: the offending file (as a string).
    channel: the offending channel label, or None when the whole file is at fault.
    message: the reason, without the path/channel prefix.
  """

  def __init__(self, path: str | os.PathLike, message: str, channel: str | None = None):
    self.path = os.fspath(path)
    self.channel = channel
    self.message = message
    prefix = f"{self.path}: " if channel is None else f"{self.path}: channel '{channel}': "
    super().__init__(prefix + message)

  def __reduce__(self):
    # Worker processes send exceptions back pickled; rebuild from the fields, not from `args`.
    return (PSGError, (self.path, self.message, self.channel))
