"""SIGTERM / SIGINT as a request to stop, recorded from the first moment of an entry point.

``install()`` records the two signals instead of letting them end the process; the training loop
(``training.run``) reads ``received()`` once before its first step and between steps, saves,
stops and ``clear()``s it. ``train.py`` installs it before importing anything slow, so a signal
that arrives while JAX is still being imported is not lost: the run stops before its first step
and exits 0. Modes without a loop that stops cleanly ``release()`` the signals: default handlers
again, and a signal recorded meanwhile is delivered at once.
"""
from __future__ import annotations

import os
import signal

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


def _record(signum, frame) -> None:
  del frame
  _received.append(signum)


def install() -> dict:
  """Records SIGTERM / SIGINT from now on; returns the handlers it replaced. Outside the main
  thread (where Python cannot set handlers) nothing changes."""
  previous = {}
  for sig in SIGNALS:
    try:
      previous[sig] = signal.signal(sig, _record)
    except ValueError:
      pass
  return previous


def received() -> int | None:
  """The first signal recorded since the last ``clear()``, or None."""
  return _received[0] if _received else None


def clear() -> None:
  _received.clear()


def restore(previous: dict) -> None:
  """Puts back the handlers ``install()`` returned."""
  for sig, handler in previous.items():
    signal.signal(sig, handler)


def release() -> None:
  """Python's default handlers again where ``install()``'s are; a signal recorded meanwhile is
  delivered now (it ends the process, as it would have without ``install()``)."""
  defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
  restore({sig: handler for sig, handler in defaults.items() if signal.getsignal(sig) is _record})
  pending = received()
  clear()
  if pending is not None:
    os.kill(os.getpid(), pending)
