"""Stop a long training run cleanly from outside: the first SIGINT (Ctrl-C) or SIGTERM asks the
loop to end after the step it is in, with a checkpoint that `--resume` continues; a second one
aborts at once. Killing a run mid-checkpoint could leave weights and optimizer state from
different steps; ending between steps cannot."""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType


class StopRequest:
    """Context manager; true once a stop was asked for. Outside the main thread (where Python
    cannot install signal handlers) it does nothing and stays false."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self:
            self._restore()
            raise KeyboardInterrupt(f"{name} again: aborted without a checkpoint")
        self.signal_name = name
        print(f"\n{name}: stopping after this step with a checkpoint (--resume continues); "
              f"send it again to abort at once", file=sys.stderr, flush=True)
