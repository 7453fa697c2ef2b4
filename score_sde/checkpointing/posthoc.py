"""Post-hoc EMA snapshots on disk: ``<workdir>/posthoc_ema/<step>/{ema, meta}``, beside the
checkpoints, all kept (the reconstruction needs the whole history).

``ema`` is the tuple of power-EMA parameter trees at that step (one per tracked length), written
by orbax like a checkpoint (atomically: an interrupted save is never listed); ``meta`` is JSON
``{"sigma_rels": [...]}``. ``reconstruct_params`` rebuilds the EMA of any length from them
(``score_sde.posthoc_ema``), reading one snapshot at a time.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from score_sde import posthoc_ema
from score_sde.errors import MissingFileError


def snapshot_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'posthoc_ema')


def _manager(workdir: str, create: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=None, create=create,
                                         enable_async_checkpointing=create)
  return ocp.CheckpointManager(snapshot_dir(workdir), options=options, item_handlers={
      'ema': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()})


class SnapshotWriter:
  """Saves the power EMAs of a run (asynchronously; ``close`` waits), ``every`` steps as the
  training loop asks. A step already on disk is not written again: a resumed run repeats it bit
  for bit."""

  def __init__(self, workdir: str, sigma_rels: Sequence[float], every: int):
    self._manager = _manager(workdir, create=True)
    self._sigma_rels = [float(s) for s in sigma_rels]
    self.every = every

  def save(self, step: int, power_ema_params: Sequence[Any]) -> None:
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.Composite(
        ema=ocp.args.StandardSave(tuple(power_ema_params)),
        meta=ocp.args.JsonSave({'sigma_rels': self._sigma_rels})), force=True)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def list_profiles(workdir: str) -> list[tuple[int, list[float]]]:
  """(step, sigma_rels) of every complete snapshot of ``workdir``, by step; [] if none."""
  if not os.path.isdir(snapshot_dir(workdir)):
    return []
  manager = _manager(workdir, create=False)
  try:
    return [(step, list(manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']['sigma_rels'])) for step in manager.all_steps()]
  finally:
    manager.close()


def reconstruct_params(workdir: str, sigma_rel: float, template: Any = None,
                       step: int | None = None,
                       max_residual: float = posthoc_ema.MAX_RELATIVE_RESIDUAL
                       ) -> tuple[Any, int, float]:
  """The power EMA of length ``sigma_rel`` at snapshot ``step`` (default: the last) of the run in
  ``workdir``, shaped like ``template`` (the model's parameter tree; None: as saved, nested
  dicts). Returns (params, step, relative residual of the fitted profile); ConfigError as
  ``posthoc_ema.plan``."""
  if not os.path.isdir(workdir):
    raise MissingFileError(f'Workdir {workdir} does not exist.')
  profiles = list_profiles(workdir)
  weights, step, residual = posthoc_ema.plan(profiles, sigma_rel, step, max_residual)
  counts = dict(profiles)
  total = None
  manager = _manager(workdir, create=False)
  try:
    for s in sorted({s for s, _, _ in weights}):
      item = (None if template is None else tuple(
          jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), template)
          for _ in counts[s]))
      trees = manager.restore(s, args=ocp.args.Composite(
          ema=ocp.args.StandardRestore(item)))['ema']
      for s_k, j, c in weights:
        if s_k == s:
          part = jax.tree.map(lambda x, c=c: c * np.asarray(x, np.float64), trees[j])
          total = part if total is None else jax.tree.map(np.add, total, part)
  finally:
    manager.close()
  dtypes = jax.tree.map(lambda x: np.asarray(x).dtype, trees[0])
  return jax.tree.map(lambda t, d: t.astype(d), total, dtypes), step, residual


def params_path(workdir: str, sigma_rel: float, step: int) -> str:
  """Where the EMA of length ``sigma_rel`` at ``step`` is written once rebuilt."""
  return os.path.join(snapshot_dir(workdir), f'ema_sigma_rel_{float(sigma_rel):g}_step_{step}.msgpack')


def load_or_reconstruct(workdir: str, sigma_rel: float, template: Any, step: int | None = None
                        ) -> tuple[Any, int]:
  """(params, step): the EMA of length ``sigma_rel`` at ``step`` (default: the last snapshot),
  read from its file (``params_path``) if it was rebuilt before, else rebuilt from the
  snapshots (``reconstruct_params``) and written there. Snapshots never change once written,
  so the file stays valid."""
  if step is None:
    steps = [s for s, _ in list_profiles(workdir)]
    step = steps[-1] if steps else None
  if step is not None and os.path.exists(params_path(workdir, sigma_rel, step)):
    with open(params_path(workdir, sigma_rel, step), 'rb') as f:
      return flax.serialization.from_bytes(template, f.read()), step
  params, step, _ = reconstruct_params(workdir, sigma_rel, template, step)
  write_params(params, params_path(workdir, sigma_rel, step))
  return params, step


def write_params(params: Any, path: str) -> None:
  """``params`` as a Flax msgpack file, atomically (a temporary file, then a rename)."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(flax.serialization.to_bytes(params))
  os.replace(tmp, path)


def chosen_ema_params(config, workdir: str, state) -> Any:
  """The EMA parameters to sample and evaluate ``state`` (a restored train state) with: the
  classic EMA, or with ``config.sampling.ema_sigma_rel`` set, the post-hoc EMA of that length at
  the state's step (``load_or_reconstruct``)."""
  sigma_rel = config.sampling.get('ema_sigma_rel')
  if sigma_rel is None:
    return state.ema_params
  return load_or_reconstruct(workdir, sigma_rel, state.params, int(state.step))[0]


# ------------------------------------------------------------------------------------------------
# python -m score_sde.checkpointing.posthoc --workdir=RUN --sigma_rel=0.08[,0.12] [--step=N]

def main(argv):
  """Rebuilds each asked EMA length from the run's snapshots and writes it where ``sample.py`` and
  ``train.py --mode=eval`` read it (``--config.sampling.ema_sigma_rel``): one line per length."""
  del argv
  from absl import flags
  f = flags.FLAGS
  for text in f.sigma_rel:
    sigma_rel = float(text)
    params, step, residual = reconstruct_params(f.workdir, sigma_rel, step=f.step)
    path = params_path(f.workdir, sigma_rel, step)
    write_params(params, path)
    print(f'sigma_rel {sigma_rel:g} at step {step}: profile fit {residual:.2%} off; wrote {path}')


if __name__ == '__main__':
  from absl import flags

  from score_sde import cli
  flags.DEFINE_string('workdir', None, 'Training workdir whose posthoc_ema/ snapshots are used.')
  flags.DEFINE_list('sigma_rel', None, 'EMA length(s) to rebuild: relative std, e.g. 0.08,0.12.')
  flags.DEFINE_integer('step', None, 'Snapshot step to rebuild at (default: the last).')
  flags.mark_flags_as_required(['workdir', 'sigma_rel'])
  cli.run(main)
