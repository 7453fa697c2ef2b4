"""Progress with an ETA for every long operation: a bar on a terminal, log lines otherwise.

    with progress.Progress(total=1000, desc='sample pc') as bar:
      for ...:
        bar.update(1)

On a terminal (stderr is a TTY) it is a tqdm bar. Without one (output piped to a file, a batch
job, a notebook's captured output) tqdm would stay silent, so a plain line

    sample pc: 420/1000 steps (42%)  35.1 steps/s  ETA 0m16s

is printed every ``SCORE_SDE_PROGRESS_SECONDS`` seconds (default 30; 0 prints every update) and
once at the end. Only the first process reports.

A compiled loop (a sampler's ``lax.scan``, the likelihood's ODE solve) reports from inside the
device program: ``with_progress(score_fn, bar, T, eps)`` wraps a score function so that each
evaluation tells the host the time t it was evaluated at (``jax.debug.callback``), and the bar
shows the share of [eps, T] covered. This works for every sampler, fixed-step or adaptive, and in
either direction (sampling runs T -> eps, the likelihood eps -> T).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

import jax
import numpy as np
import tqdm

from score_sde import parallel, reporting

ENV_SECONDS = 'SCORE_SDE_PROGRESS_SECONDS'
DEFAULT_SECONDS = 30.0


def line_interval() -> float:
  """Seconds between progress lines when not on a terminal."""
  try:
    return max(0.0, float(os.environ.get(ENV_SECONDS, DEFAULT_SECONDS)))
  except ValueError:
    return DEFAULT_SECONDS


def on_terminal() -> bool:
  return sys.stderr.isatty()


class Progress:
  """``total`` units of work named ``desc``; ``update(n)`` adds n done, ``set(done)`` sets it.

  ``postfix`` (a callable returning a short string, e.g. the loss) is appended to each line.
  """

  def __init__(self, total: float, desc: str, unit: str = 'step', interval: float | None = None,
               initial: float = 0, postfix: Callable[[], str] | None = None):
    self.total, self.desc, self.unit = float(total), desc, unit
    self.done = self._start = float(initial)
    self.interval = line_interval() if interval is None else interval
    self._main = parallel.is_main_process()
    self._t0 = self._last_line = time.time()
    self._postfix = postfix
    self._last_done = None
    self._bar = None
    if self._main and on_terminal():
      self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit=unit,
                            dynamic_ncols=True, leave=False)

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc) -> None:
    self.close(finished=exc[0] is None)

  def update(self, n: float = 1) -> None:
    self.set(self.done + n)

  def set(self, done: float) -> None:
    done = min(max(done, self.done), self.total)
    if self._bar is not None:
      self._bar.update(done - self.done)
    self.done = done
    if self._bar is None and self._main and time.time() - self._last_line >= self.interval:
      self.write(self.line())

  def rate(self) -> float:
    return (self.done - self._start) / max(time.time() - self._t0, 1e-9)

  def line(self) -> str:
    """``desc: done/total units (pct%)  rate units/s  ETA`` (unit '%': ``desc: pct%  ETA``)."""
    rate = self.rate()
    eta = reporting.format_eta((self.total - self.done) / rate) if rate > 0 else '?'
    pct = f'{100 * self.done / max(self.total, 1e-9):.0f}%'
    extra = f'  {self._postfix()}' if self._postfix else ''
    if self.unit == '%':
      return f'{self.desc}: {pct}  ETA {eta}{extra}'
    return (f'{self.desc}: {self.done:.0f}/{self.total:.0f} {self.unit}s ({pct})  '
            f'{rate:.3g} {self.unit}s/s  ETA {eta}{extra}')

  def write(self, message: str) -> None:
    """A line for people: above the bar on a terminal, a plain line otherwise."""
    self._last_line, self._last_done = time.time(), self.done
    if not self._main:
      return
    if self._bar is not None:
      self._bar.write(message)
    else:
      print(message, flush=True)

  def close(self, finished: bool = True) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    elif self._main and finished and self.done > self._start and self.done != self._last_done:
      self.write(self.line())


class TimeTracker:
  """Reports the times t at which a compiled loop evaluates its score function to a Progress.

  ``tracker.wrap(score_fn)`` is traced into the device program once; at run time each evaluation
  calls back with its t, and the current ``bar`` (None: nothing is reported) moves to
  ``base + share * span``, share being the part of [eps, T] covered (sampling runs from T down
  to eps; ``forward``, as the likelihood, from eps up to T). A draw loop sets ``base`` before
  each call so one bar covers all its calls.
  """

  def __init__(self, T: float, eps: float, forward: bool = False):
    self.T, self.eps, self.forward = float(T), float(eps), forward
    self.bar: Progress | None = None
    self.base, self.span = 0.0, 1.0

  def _report(self, t) -> None:
    bar = self.bar
    if bar is None:
      return
    t = np.asarray(t, np.float64)
    width = max(self.T - self.eps, 1e-12)
    share = ((t.min() - self.eps) if self.forward else (self.T - t.max())) / width
    bar.set(self.base + min(max(float(share), 0.0), 1.0) * self.span)

  def wrap(self, score_fn: Callable) -> Callable:
    def reporting_score_fn(x, t, *args, **kwargs):
      jax.debug.callback(self._report, t)
      return score_fn(x, t, *args, **kwargs)
    return reporting_score_fn
