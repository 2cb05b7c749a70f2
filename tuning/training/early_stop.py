"""A stop asked for before training has set up its graceful stop: a Stop pressed right after Start used to
reach the trainer while torch was still importing, kill it with SIGTERM's default action, and show the run as
failed. From the first line of `tuning train` a stop is remembered instead, and the graceful stop
(train_callbacks.GracefulStop) takes it over; a second signal still ends the process at once."""

from __future__ import annotations

import os
import signal

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested = False


def remember_stop_signals() -> None:
    """Until GracefulStop replaces them, SIGTERM/SIGINT only mark a stop as requested (twice: the default)."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _remember)


def _remember(signum, frame) -> None:
    global _requested
    if _requested:  # asked twice: do what the signal would have done
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _requested = True


def stop_requested_early() -> bool:
    """True when a stop signal arrived before the graceful stop was installed."""
    return _requested
