"""SIGINT and SIGTERM while training: caught so that the loop can stop after a complete step, and reported.

A run killed between steps would lose everything since its last checkpoint; caught, the loop writes the
latest and best checkpoints first and then raises :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

#: The signals training catches, with the names that messages and checkpoint headers give them.
SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a complete step; the latest and best checkpoints are written.

    ``exit_code`` is the shell's convention for the signal: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, signal_number: int, step: int, steps: int, checkpoint_dir: Path):
        self.signal_number = int(signal_number)
        self.signal_name = SIGNAL_NAMES.get(signal_number, f"signal {int(signal_number)}")
        self.step, self.steps, self.checkpoint_dir = step, steps, Path(checkpoint_dir)
        self.exit_code = 128 + self.signal_number
        super().__init__(
            f"{self.signal_name} at step {step} of {steps}; the latest and best checkpoints are in {checkpoint_dir}"
        )


class Signals:
    """While training, SIGINT and SIGTERM ask the loop to stop after the current step instead of killing it.

    A second signal stops at once (KeyboardInterrupt). Signal handlers can only be set in the main thread;
    elsewhere, and when not ``enabled``, nothing changes.
    """

    def __init__(self, *, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def _handle(self, number: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = number

    def __enter__(self) -> Signals:
        if self.enabled:
            for number in SIGNAL_NAMES:
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for number, handler in self.previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        return False
