"""Progress of long runs on stderr: a live step line on a terminal, one line per epoch.

:func:`ase_equi.training.train` and :func:`~ase_equi.training.finetune.finetune` show it by
default (``verbose=True``); everything else they have to say goes through :mod:`logging`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

ProgressCallback = Callable[[dict[str, Any]], None]


class ProgressLine:
    """A progress callback that writes to ``stream`` (default ``sys.stderr``).

    ``"step"`` events rewrite one live line (``\\r``; on a terminal only, at most every
    ``interval`` seconds, so a log file is not flooded); ``"epoch"`` and ``"done"`` events
    write their printable ``"line"`` on a line of its own.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> show = ProgressLine(out, label="train")
    >>> show({"event": "epoch", "line": "epoch 1/2  step 3  loss 0.5"})
    >>> out.getvalue()
    'train: epoch 1/2  step 3  loss 0.5\\n'
    """

    def __init__(
        self, stream: TextIO | None = None, *, label: str = "", interval: float = 0.2
    ) -> None:
        self.stream = stream
        self.label = f"{label}: " if label else ""
        self.interval = interval
        self._last = 0.0
        self._live = False

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def __call__(self, info: dict[str, Any]) -> None:
        out = self._out()
        if info.get("event") == "step":
            now = time.monotonic()
            if not getattr(out, "isatty", lambda: False)() or now - self._last < self.interval:
                return
            self._last, self._live = now, True
            text = f"{self.label}epoch {info['epoch'] + 1}  step {info['step']}"
            out.write(f"\r{text}  loss {info['loss']:.4g}\x1b[K")
            out.flush()
            return
        if "line" in info:
            out.write(("\r\x1b[K" if self._live else "") + f"{self.label}{info['line']}\n")
            out.flush()
            self._live = False


def combine(callbacks: Sequence[ProgressCallback | None]) -> ProgressCallback | None:
    """One callback calling each of ``callbacks`` (None entries skipped) in order."""
    chosen = [c for c in callbacks if c is not None]
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]

    def call(info: dict[str, Any]) -> None:
        for c in chosen:
            c(info)

    return call
