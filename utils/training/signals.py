"""Ctrl-C and SIGTERM during training: finish the step, write ``last.pt``, stop."""
from __future__ import annotations

import signal
import time


class StopFlag:
    """SIGINT/SIGTERM set a flag so the current step finishes and a checkpoint is written;
    a second signal stops at once. Seconds apart: Ctrl-C under torchrun reaches each worker
    twice at once (from the terminal and again from the launcher), which must not abort the
    checkpoint."""

    def __init__(self):
        self.requested = None
        self._first = 0.0
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            if time.monotonic() - self._first > 1.0:
                raise KeyboardInterrupt
            return
        self.requested, self._first = signal.Signals(signum).name, time.monotonic()

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
