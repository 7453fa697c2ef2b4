"""Orbax checkpoints of the train state and the data position: atomic, resumable, pruned.

Layout: ``<workdir>/checkpoints/<step>/{state, data}``. ``state`` is the (unreplicated) train
state pytree, ``data`` the data iterator's JSON state. Orbax writes each checkpoint to a
temporary directory and renames it when complete, so an interrupted save never becomes the
latest: ``latest_step`` only sees finished checkpoints.

Retention (one manager, one directory): the most recent checkpoint is always kept (the frequent
preemption snapshot) and every step that is a multiple of ``keep_period`` (the periodic
snapshots, ``training.snapshot_freq``) is kept forever.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from score_sde.errors import ConfigError


class CheckpointError(RuntimeError):
  """A checkpoint is missing, incomplete or does not match the model being restored."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


class Checkpointer:
  """Saves and restores ``(state, data_state)`` pairs under ``directory``."""

  def __init__(self, directory: str, keep_period: int | None = None, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, keep_period=keep_period, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=('state', 'data'))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict | None = None) -> None:
    """Starts saving (asynchronously); ``wait`` blocks until it is on disk."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state or {}))
    self._manager.save(step, args=args, force=True)

  def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores the checkpoint at ``step`` (default: the latest) into ``template``'s structure.

    Raises ``CheckpointError`` naming the directory and the steps present if there is none, or
    naming the broken checkpoint if it cannot be read or does not fit ``template``.
    """
    steps = self.all_steps()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise CheckpointError(f'No complete checkpoint in {self.directory}.')
    elif step not in steps:
      raise CheckpointError(f'No checkpoint for step {step} in {self.directory}; '
                            f'available steps: {steps}.')
    self._check_params_fit(step, template)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(template),
                              data=ocp.args.JsonRestore())
    try:
      restored = self._manager.restore(step, args=args)
    except Exception as e:  # orbax raises many types for unreadable or mismatched trees
      raise CheckpointError(
          f'Checkpoint {os.path.join(self.directory, str(step))} could not be restored '
          f'({type(e).__name__}: {str(e)[:500]}). If it is corrupt, move it away to resume from '
          f'an earlier one (available steps: {steps}); if the config changed, use the config it '
          f'was trained with.') from e
    return restored['state'], dict(restored['data'] or {})

  def _check_params_fit(self, step: int, template: Any) -> None:
    """Compares the saved parameter shapes with ``template.params`` before reading any array,
    so a checkpoint of another model fails at once with the first differing path."""
    try:
      with ocp.StandardCheckpointer() as reader:
        saved = reader.metadata(os.path.join(self.directory, str(step), 'state')).item_metadata
      saved = _shapes(saved['params'])
    except Exception:  # unreadable metadata: the restore below reports the checkpoint itself
      return
    wanted = _shapes(template.params)
    for path in sorted(set(saved) | set(wanted)):
      if saved.get(path) != wanted.get(path):
        raise CheckpointError(
            f'Checkpoint {os.path.join(self.directory, str(step))} does not fit this model: '
            f'params/{path} is {saved.get(path, "absent")} there but {wanted.get(path, "absent")} '
            f'here. Use the config it was trained with.')

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _shapes(tree) -> dict[str, tuple[int, ...] | None]:
  """'/'-joined key path -> shape, for a nested dict of arrays or array metadata."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): tuple(np.shape(v) if not hasattr(
      v, 'shape') else v.shape) for path, v in flat}


# data.* keys that fix the network's input: a checkpoint trained with other values cannot load.
RUN_DATA_KEYS = ('num_channels', 'image_size')


def check_run_data(workdir: str, config) -> None:
  """ConfigError if ``workdir`` holds checkpoints of a run whose ``config.json`` records another
  channel count or image size than ``config`` (checked before anything is restored or rewritten)."""
  path = os.path.join(workdir, 'config.json')
  ckpt_dir = checkpoint_dir(workdir)
  if not (os.path.isfile(path) and os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir)):
    return
  try:
    with open(path) as f:
      saved = json.load(f).get('data', {})
  except (OSError, ValueError):   # unreadable: the parameter-shape check still applies
    return
  for key in RUN_DATA_KEYS:
    if key in saved and saved[key] != config.data.get(key):
      raise ConfigError(f'data.{key} = {config.data.get(key)}, but the checkpoints in {workdir} '
                        f'were trained with data.{key} = {saved[key]} ({path}); use that value '
                        f'or another workdir.')
