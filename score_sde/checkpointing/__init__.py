"""Orbax checkpoints of the train state, the data position and the run's config.

The package: this module (our orbax checkpoints), ``identity`` (a run's identity: which config
keys may differ between invocations, ``config.json``) and ``paper`` (the paper's msgpack
checkpoints).

Layout: ``<workdir>/checkpoints/<step>/{state, data, config}``. ``state`` is the (unreplicated)
train state pytree, ``data`` the data iterators' JSON state, ``config`` the config the run was
trained with (JSON; checkpoints written before it existed have none and still restore). Orbax
writes each checkpoint to a temporary directory and renames it when complete, so an interrupted
save never becomes the latest: ``latest_step`` only sees finished checkpoints.

The stored config is the run's identity: ``restore(..., config=config)`` compares it with the
config in hand before reading any array and raises ``errors.ConfigError`` naming the differing
keys (``identity.config_differences``). A checkpoint that cannot be read raises
``CheckpointError`` with one line naming the step, the file, the cause and the earlier complete
step to fall back to.

Retention (one manager, one directory): the most recent checkpoint is always kept (the frequent
preemption snapshot) and every step that is a multiple of ``keep_period`` (the periodic
snapshots, ``training.snapshot_freq``) is kept forever.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import logging as std_logging
import os
import re
import shutil
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from score_sde import errors
from score_sde.checkpointing import identity


class CheckpointError(errors.ScoreSDEError, RuntimeError):
  """A checkpoint is missing, incomplete, unreadable or does not match the model being restored."""


class DiskFullError(errors.ScoreSDEError, OSError):
  """A checkpoint could not be written because its disk is full."""


_DISK_FULL = ('No space left on device', "os_error_code='28'", 'Disk quota exceeded')


def _is_disk_full(error: BaseException | None) -> bool:
  """Whether ``error`` or an exception it was raised from is ENOSPC / EDQUOT (TensorStore's
  errors are ValueErrors naming the OS error)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if any(s in str(error) for s in _DISK_FULL):
      return True
    error = error.__cause__ or error.__context__
  return False


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


@contextlib.contextmanager
def _quiet_orbax():
  """Orbax logs warnings for normal read-only use and for reads whose failure we report
  ourselves; the user sees our one message instead."""
  level = logging.get_verbosity()
  if level < logging.DEBUG:
    logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(level)


# A failed restore leaves orbax's other array reads running; as each finishes it reports itself
# (its own error, or asyncio's 'Event loop is closed' once orbax has closed its loop) from
# TensorStore's threads through sys.unraisablehook or sys.excepthook (TensorStore calls both
# PyErr_WriteUnraisable and PyErr_Print), and asyncio logs 'Task exception was never retrieved',
# while and after the restore's one CheckpointError is raised. These repeat that error, so they
# are dropped.
_ABANDONED_READ = 'Encountered error while reading array'


def _is_abandoned_read(error: BaseException | None) -> bool:
  return ((isinstance(error, RuntimeError) and str(error) == 'Event loop is closed')
          or _ABANDONED_READ in str(error) or _is_disk_full(error))


class _AbandonedReadLogFilter(std_logging.Filter):
  """Drops the log records of failures that are reported as one ``CheckpointError`` /
  ``DiskFullError``: abandoned reads, and every write of a save that ran out of disk space
  (orbax logs each failed thread with its traceback)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else '')
    return _ABANDONED_READ not in text and not any(s in text for s in _DISK_FULL)


for _name in ('asyncio', 'absl'):
  std_logging.getLogger(_name).addFilter(_AbandonedReadLogFilter())


def _install_dropping_hooks() -> tuple[tuple, tuple]:
  """Puts hooks before ``sys.unraisablehook`` and ``sys.excepthook`` that drop the reports
  ``_is_abandoned_read`` recognises and pass everything else on; returns (the new hooks, the
  old ones)."""
  previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

  def unraisable(report):
    if not _is_abandoned_read(report.exc_value):
      previous_unraisable(report)

  def excepthook(kind, error, tb):
    if not _is_abandoned_read(error):
      previous_except(kind, error, tb)
  sys.unraisablehook, sys.excepthook = unraisable, excepthook
  return (unraisable, excepthook), (previous_unraisable, previous_except)


@contextlib.contextmanager
def _drop_abandoned_reads():
  """Drops the abandoned reads' reports during a restore and, if the restore fails, after it
  (the reads outlive it); everything else reaches the old hooks."""
  (unraisable, excepthook), (previous_unraisable, previous_except) = _install_dropping_hooks()
  yield
  # Reached only when the restore succeeded: nothing is left reading.
  if sys.unraisablehook is unraisable:
    sys.unraisablehook = previous_unraisable
  if sys.excepthook is excepthook:
    sys.excepthook = previous_except


_save_reports_dropped = []


def _drop_save_reports() -> None:
  """From the first save on, the reports of a save's failed background writes (each thread's
  traceback) are dropped: the failure is raised once, as ``DiskFullError``, where the save is
  waited for."""
  if not _save_reports_dropped:
    _save_reports_dropped.append(_install_dropping_hooks())


# Orbax on CPU/TPU saves a replicated array "replica-parallel": each device's copy is cut into
# slices, one eager slice (one compile) per array, shape and device, ~10 s of compiles at the first
# save of a tiny model on 8 CPU devices. Slicing only pays off when each replica's share is large.
with _quiet_orbax():     # it warns that it overrides its default
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=2**24),
      override=True)


def _item_handlers():
  return {'state': ocp.StandardCheckpointHandler(), 'data': ocp.JsonCheckpointHandler(),
          'config': ocp.JsonCheckpointHandler()}


class Checkpointer:
  """Saves and restores ``(state, data_state)`` pairs, with the run's config, under
  ``directory``. ``read_only`` never creates, writes or deletes anything."""

  def __init__(self, directory: str, keep_period: int | None = None, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self._read_only = read_only
    # A read-only manager is an ordinary one that is never asked to save: orbax's own read_only
    # mode only adds warnings.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else 1, keep_period=None if read_only else keep_period,
        create=not read_only, enable_async_checkpointing=async_save)
    with _quiet_orbax():
      self._manager = ocp.CheckpointManager(self.directory, options=options,
                                            item_handlers=_item_handlers())

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict | None = None,
           config: Any = None) -> None:
    """Starts saving (asynchronously); ``wait`` blocks until it is on disk. ``config`` (a
    ConfigDict) is stored with the checkpoint as the run's identity."""
    if self._read_only:
      raise RuntimeError(f'Checkpointer for {self.directory} is read-only.')
    items = dict(state=ocp.args.StandardSave(_stored_fields(state)),
                 data=ocp.args.JsonSave(data_state or {}))
    if config is not None:
      items['config'] = ocp.args.JsonSave(identity.config_to_dict(config))
    _drop_save_reports()
    with self._disk_full_as_one_line(step):   # an earlier save's failure surfaces here too
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  @contextlib.contextmanager
  def _disk_full_as_one_line(self, step: int | None):
    """A save that ran out of disk space (this one, or an earlier asynchronous one that fails
    now) becomes one ``DiskFullError`` naming the step lost and the steps intact; its partial
    files are removed."""
    try:
      yield
    except Exception as e:  # noqa: BLE001
      if not _is_disk_full(e):
        raise
      partial = glob.glob(os.path.join(self.directory, '*.orbax-checkpoint-tmp*'))
      lost = sorted({int(m.group(1)) for p in partial
                     if (m := re.match(r'(\d+)\.', os.path.basename(p)))}) or [step]
      for path in partial:
        shutil.rmtree(path, ignore_errors=True)
      self._failed = True
      intact = complete_steps(self.directory)
      kept = (f'steps {", ".join(map(str, intact))} are intact' if len(intact) > 1 else
              f'step {intact[0]} is intact' if intact else 'no checkpoint was written before')
      raise DiskFullError(
          f'The disk is full at {self.directory}: step {", ".join(map(str, lost))} was not '
          f'saved; {kept}. Free some space and rerun the same command to resume.') from None

  def stored_config(self, step: int) -> dict | None:
    """The config stored with checkpoint ``step`` as a nested dict (None for older ones)."""
    if not os.path.isdir(os.path.join(self.directory, str(step), 'config')):
      return None
    try:
      with _drop_abandoned_reads():
        restored = self._manager.restore(step, args=ocp.args.Composite(
            config=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001  reported as one line naming the file
      raise CheckpointError(self._unreadable(step, e)) from e
    return dict(restored['config'])

  def check_config(self, config, step: int | None = None) -> None:
    """Raises ``errors.ConfigError`` if ``config`` is not the run of checkpoint ``step``
    (default: the latest): the differing keys, with their values on both sides."""
    step = self.latest_step() if step is None else step
    stored = None if step is None else self.stored_config(step)
    if stored is None:
      return
    diffs = identity.config_differences(stored, identity.config_to_dict(config))
    if diffs:
      raise errors.ConfigError(
          f'This config is not the one checkpoint {os.path.join(self.directory, str(step))} was '
          f'trained with: {identity.format_differences(diffs)}. Use the config it was '
          f'trained with (its values are in <workdir>/config.json), or another --workdir.')

  def restore(self, template: Any, step: int | None = None,
              config: Any = None) -> tuple[Any, dict]:
    """Restores the checkpoint at ``step`` (default: the latest) into ``template``'s structure.

    With ``config``, first checks it is the config the checkpoint was trained with
    (``check_config``). Raises ``CheckpointError`` naming the directory and the steps present if
    there is none, or naming the step, file and cause if it cannot be read or does not fit
    ``template``; nothing is read after the first problem.
    """
    steps = self.all_steps()
    if step is None:
      step = self.latest_step()
      if step is None:
        where = ('does not exist' if not os.path.isdir(os.path.dirname(self.directory)) else
                 'has no complete checkpoint' if os.path.isdir(self.directory) else
                 'has no checkpoints/ folder')
        raise CheckpointError(f'No complete checkpoint in {self.directory}: the workdir {where}.')
    elif step not in steps:
      raise CheckpointError(f'No checkpoint for step {step} in {self.directory}; '
                            f'available steps: {steps}.')
    if config is not None:
      self.check_config(config, step)
    self._check_params_fit(step, template)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(_stored_fields(template)),
                              data=ocp.args.JsonRestore())
    try:
      with _quiet_orbax(), _drop_abandoned_reads():
        restored = self._manager.restore(step, args=args)
    except Exception as e:  # noqa: BLE001  orbax raises many types for unreadable trees
      raise CheckpointError(self._unreadable(step, e)) from e
    state = restored['state']
    if dataclasses.is_dataclass(template):
      state = template.replace(**dict(state))
    return state, dict(restored['data'] or {})

  def _unreadable(self, step: int, e: Exception) -> str:
    """One line: the step, the file, the cause, and the earlier complete step."""
    path = os.path.join(self.directory, str(step))
    file, cause = read_error_cause(e)
    earlier = [s for s in self.all_steps() if s < step]
    fallback = (f'move {path} away to resume from step {earlier[-1]}, the earlier complete '
                f'checkpoint' if earlier else 'there is no earlier checkpoint to fall back to')
    return (f'Checkpoint step {step} is unreadable: {os.path.relpath(file, path) if file else path}'
            f' in {path}: {cause}; {fallback}.')

  def _check_params_fit(self, step: int, template: Any) -> None:
    """Reads the saved tree's metadata before any array, so a missing or corrupt metadata file,
    or a checkpoint of another model, fails at once with the first differing path."""
    path = os.path.join(self.directory, str(step))
    if not os.path.exists(os.path.join(path, 'state', '_METADATA')):
      raise CheckpointError(self._unreadable(step, FileNotFoundError(
          f'local file "{os.path.join(path, "state", "_METADATA")}": the file is missing')))
    try:
      with _quiet_orbax(), _drop_abandoned_reads():   # the tree's metadata is read like arrays
        saved = self._manager.metadata(step).item_metadata['state']
      saved = _shapes(saved['params'])
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(self._unreadable(step, e)) from e
    wanted = _shapes(template.params)
    for key in sorted(set(saved) | set(wanted)):
      if saved.get(key) != wanted.get(key):
        raise CheckpointError(
            f'Checkpoint {path} does not fit this model: params/{key} is '
            f'{saved.get(key, "absent")} there but {wanted.get(key, "absent")} here. Use the '
            f'config it was trained with.')

  def wait(self) -> None:
    with self._disk_full_as_one_line(None):
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the last save; after a ``DiskFullError`` it only releases the manager."""
    if getattr(self, '_failed', False):
      with contextlib.suppress(Exception):
        self._manager.close()
      return
    with self._disk_full_as_one_line(None):
      self._manager.wait_until_finished()
    self._manager.close()


def _stored_fields(state: Any) -> Any:
  """What a checkpoint stores of ``state``: a dataclass state's fields that are not None (the
  power EMAs of a run without post-hoc EMA are None), so such a run's checkpoints keep the
  layout they had before the field existed; orbax matches trees key by key."""
  if not dataclasses.is_dataclass(state):
    return state
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
          if getattr(state, f.name) is not None}


def read_error_cause(e: Exception) -> tuple[str | None, str]:
  """The file a (TensorStore) read error is about and its cause, without TensorStore's spec.

  Orbax wraps TensorStore's error ("Encountered error while reading array index ... See full
  TensorStore details: <spec>"), so the exception chain is searched for the one naming a file;
  the array it was reading, when named, goes into the cause."""
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(e)
    e = e.__cause__ or e.__context__
  named = [c for c in chain if 'local file "' in str(c)]
  e = named[0] if named else chain[0]
  message = str(e).split(' [tensorstore_spec=')[0].split(' See full TensorStore details')[0]
  message = message.strip()
  files = re.findall(r'local file "([^"]+)"', message)
  file = files[-1] if files else None
  if file is not None:
    cause = message.rsplit(f'local file "{file}"', 1)[1].lstrip(': ')
    array = re.search(r'Error reading "([^"/]+)/[^"]*"', message)
    if array:
      cause = f'array {array.group(1).replace(".", "/")}: {cause}'
  else:
    cause = f'{type(e).__name__}: {message}'
  cause = cause.splitlines()[0] if cause else type(e).__name__
  return file, cause[:300]


def _shapes(tree) -> dict[str, tuple[int, ...] | None]:
  """'/'-joined key path -> shape, for a nested dict of arrays or array metadata."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(np.shape(v) if not hasattr(
      v, 'shape') else v.shape) for path, v in flat}


def classifier_checkpoint_dir(workdir: str) -> str:
  """Where ``train.py --mode=train_classifier`` keeps the classifier of ``workdir``."""
  return os.path.join(os.path.abspath(workdir), 'classifier', 'checkpoints')


def load_classifier(config, workdir: str):
  """(classifier module, parameters) of the latest classifier checkpoint of ``workdir``."""
  import jax.random
  from score_sde import train_state
  from score_sde.models import classifier as classifiers
  classifier = classifiers.get_classifier(config)
  optimizer = train_state.get_classifier_optimizer(config.classifier)
  template = train_state.init_classifier_state(config, classifier, optimizer,
                                               jax.random.PRNGKey(0))
  directory = classifier_checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise errors.MissingFileError(f'No classifier checkpoints in {directory}; train one with '
                                  f'train.py --mode=train_classifier --workdir={workdir}.')
  ckpt = Checkpointer(directory, read_only=True)
  try:
    state, _ = ckpt.restore(template)
  finally:
    ckpt.close()
  return classifier, state.params


def complete_steps(directory: str) -> list[int]:
  """The steps of the complete checkpoints in ``directory``, from the file system alone (no
  orbax call, no collective: usable while other processes are gone). Orbax writes a checkpoint
  under a temporary name and renames it to its step when complete."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def resume_note(directory: str) -> str:
  """'The last complete checkpoint is step N in <directory>; ...' for a message."""
  steps = complete_steps(directory)
  if not steps:
    return f'There is no complete checkpoint in {directory}; a rerun starts afresh.'
  return (f'The last complete checkpoint is step {steps[-1]} in {directory}; rerun the same '
          'command to resume from it.')


def check_workdir(workdir: str, flag: str = '--workdir') -> None:
  """A run can write into ``workdir`` (given as ``flag``): it is a directory, or can be made as
  one, on a writable file system."""
  path = os.path.abspath(workdir)
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    what = 'is a file' if existing == path else f'is under {existing}, a file'
    raise errors.ConfigError(f'{flag} {workdir} {what}; give a directory (it is created if '
                             'missing).')
  if not os.access(existing, os.W_OK | os.X_OK):
    read_only = os.statvfs(existing).f_flag & os.ST_RDONLY
    raise errors.ConfigError(f'{flag} {workdir}: {existing} is not writable'
                             f'{" (a read-only file system)" if read_only else ""}.')


def check_run_config(config, workdir: str) -> None:
  """``Checkpointer.check_config`` for the latest checkpoint of ``workdir``, if it has one."""
  check_workdir(workdir)
  directory = checkpoint_dir(workdir)
  if os.path.isdir(directory):
    ckpt = Checkpointer(directory, read_only=True)
    try:
      ckpt.check_config(config)
    finally:
      ckpt.close()
