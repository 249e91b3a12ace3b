"""A one-line progress bar on stderr: step, loss, tokens/s and time left.

Drawn only when stderr is a terminal (so logs and pipes stay clean); otherwise messages (evaluation
results) are printed as plain lines, and with `enabled=False` nothing is printed at all.
"""

from __future__ import annotations

import shutil
import sys
import time


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    def __init__(self, total_steps=None, minutes=None, enabled=True, stream=None, start_step=0,
                 interval=0.2):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.bar = enabled and bool(isatty and isatty())
        self.total, self.minutes = total_steps, minutes
        self.start_step = start_step
        self.interval = interval
        self._last_draw = 0.0
        self._loss = None  # exponential moving average of the training loss
        self._width = 0

    def eta(self, step, elapsed):
        """Seconds left: the sooner of the step budget (at the current rate) and the time budget."""
        left = []
        done = step - self.start_step
        if self.total is not None and done > 0:
            left.append((self.total - step) * elapsed / done)
        if self.minutes is not None:
            left.append(self.minutes * 60 - elapsed)
        return min(left) if left else None

    def line(self, step, loss, tokens_per_s, elapsed):
        self._loss = loss if self._loss is None else 0.95 * self._loss + 0.05 * loss
        parts = []
        if self.total is not None:
            frac = min(1.0, step / self.total)
            n = 20
            fill = int(frac * n)
            parts.append("[" + "#" * fill + "." * (n - fill) + f"] {step}/{self.total}")
        else:
            parts.append(f"step {step}")
        parts.append(f"loss {self._loss:.4f}")
        parts.append(f"{tokens_per_s:,.0f} tok/s")
        eta = self.eta(step, elapsed)
        parts.append(f"elapsed {format_seconds(elapsed)}")
        if eta is not None:
            parts.append(f"left {format_seconds(eta)}")
        return "  ".join(parts)

    def update(self, step, loss, tokens_per_s, elapsed):
        text = self.line(step, loss, tokens_per_s, elapsed)  # keeps the moving average current
        if not self.bar:
            return
        now = time.perf_counter()
        if now - self._last_draw < self.interval and step != self.total:
            return
        self._last_draw = now
        cols = shutil.get_terminal_size((100, 20)).columns - 1
        text = text[:cols]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)

    def message(self, text):
        """A line printed above the bar (or alone when there is no bar)."""
        if not self.enabled:
            return
        if self.bar and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self):
        if self.bar and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
