"""Progress of a long step: a tqdm bar in a terminal, plain periodic lines in a log.

Why two forms: a tqdm bar redraws with carriage returns, which a log file or CI console
keeps as one enormous line (or hundreds of them), and a terminal that reports no width
(some pseudo-terminals) shows nothing of it. Unless the stream is a terminal with a
width (`can_draw`) the same progress is written as a plain line every `interval` seconds.
Either way the step ends with one summary line, so a log always says how much was done
and how fast.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO

from tqdm import tqdm


class Progress:
    """Counts `update(n)` calls against `total`; `close(summary)` prints the last line.

    Args:
      total: units expected (images).
      desc: what is being done ("convert").
      enabled: False prints nothing at all (library callers, tests).
      stream: where to write; default sys.stderr (looked up when created).
      interval: seconds between plain lines when `stream` is not a terminal.
    """

    def __init__(self, total: int, desc: str, unit: str = "img", enabled: bool = True,
                 stream: Optional[TextIO] = None, interval: float = 30.0):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.done = 0
        self.start = self._last = time.perf_counter()
        self._bar = None
        if enabled and total and can_draw(self.stream):
            self._bar = tqdm(total=total, unit=unit, desc=desc, file=self.stream,
                             smoothing=0.1)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and self.total and now - self._last >= self.interval:
            self._last = now
            rate = self.done / max(now - self.start, 1e-9)
            print(f"{self.desc}: {self.done}/{self.total} {self.unit} "
                  f"({100.0 * self.done / self.total:.0f}%, {rate:.1f} {self.unit}/s)",
                  file=self.stream, flush=True)

    def close(self, summary: str = "") -> None:
        """Ends the bar; prints `summary` (if any) as the last line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled and summary:
            print(f"{self.desc}: {summary}", file=self.stream, flush=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def can_draw(stream) -> bool:
    """Whether a bar can be drawn on `stream`: a terminal that reports a width."""
    try:
        return bool(stream.isatty()) and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):
        return False
