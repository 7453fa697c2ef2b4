"""Writing results for people and programs: atomic files, tables, ETA strings, printing.

Every file here is written atomically (a temporary file in the same folder, then a rename), so a
reader or a resumed run sees the old file or the whole new one, never half of it. Only the main
process prints (``say``); callers decide which process writes files.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from score_sde import parallel


def _atomic(path: str, write: Callable[[Any], None], newline: str | None = None) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', newline=newline) as f:
    write(f)
  os.replace(tmp, path)
  return path


def write_json(path: str, obj: Any, indent: int = 2) -> str:
  """``obj`` as JSON at ``path`` (atomically); values JSON cannot hold are written as str."""
  return _atomic(path, lambda f: json.dump(obj, f, indent=indent, default=str))


def write_npz(path: str, **arrays) -> str:
  """``np.savez`` at ``path`` (atomically)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}.npz'   # numpy appends .npz to a name without it
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


def read_json(path: str) -> Any:
  """The JSON at ``path``, or None if there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_text(path: str, text: str) -> str:
  return _atomic(path, lambda f: f.write(text))


def write_csv(path: str, rows: Sequence[dict]) -> str:
  """One row per dict; columns are the union of the keys in first-seen order."""
  fields = list(dict.fromkeys(k for r in rows for k in r))

  def write(f):
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
  return _atomic(path, write, newline='')


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  return '\n'.join(lines + ['| ' + ' | '.join(r) + ' |' for r in rows]) + '\n'


def format_value(value: float | None, se: float | None = None, digits: int = 4) -> str:
  """'1.234 ± 0.05' (the standard error when finite), '—' for a missing value."""
  if value is None:
    return '—'
  text = f'{value:.{digits}g}'
  return text if se is None or not np.isfinite(se) else f'{text} ± {se:.2g}'


def format_eta(seconds: float) -> str:
  """'1h02m03s' or '2m03s'."""
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


def say(message: str, bar=None) -> None:
  """Progress for people, from the main process only: above a tqdm bar on a terminal, else a
  plain line."""
  if not parallel.is_main_process():
    return
  if bar is not None and not bar.disable:
    bar.write(message)
  else:
    print(message, flush=True)


def output_stem(directory: str, name: str, suffixes: Sequence[str]) -> str:
  """``directory/name``, or ``directory/name_2``, ``_3``, ... the first for which no file
  ``stem + suffix`` exists: outputs never overwrite each other."""
  stem, k = os.path.join(directory, name), 1
  while any(os.path.exists(stem + s) for s in suffixes):
    k += 1
    stem = os.path.join(directory, f'{name}_{k}')
  return stem


def banner(program: str, config, params: Any = None, num_examples: int | None = None) -> str:
  """One start-up line: processes x devices (platform), the model and its parameter count, the
  data (name, example shape, size when known)."""
  import jax
  n_proc, n_local = jax.process_count(), jax.local_device_count()
  devices = (f'{n_proc} processes x {n_local} devices' if n_proc > 1 else
             f'{n_local} device{"s" if n_local > 1 else ""}')
  model = config.model.name
  if params is not None:
    model += f' ({sum(int(np.size(x)) for x in jax.tree.leaves(params)):,} parameters)'
  d = config.data
  shape = (f'{d.image_size}x{d.image_size}x{d.num_channels} images' if d.image_size
           else f'{d.get("dim", 2)}-D points')
  size = f', {num_examples:,} examples' if num_examples else ''
  return (f'{program}: {devices} ({jax.devices()[0].platform}); model {model}; '
          f'{config.training.sde}; data {d.dataset} ({shape}{size})')
