"""Bits/dim of trained checkpoints over a dataset split, as the paper's ``--mode=eval``.

For every checkpoint chosen by ``eval.begin_ckpt`` / ``eval.end_ckpt`` (snapshot i is step
i * ``training.snapshot_freq``), the EMA parameters' log-likelihood (``likelihood``: the
probability-flow ODE, Hutchinson or exact trace) is computed on ``eval.bpd_dataset`` with uniform
dequantization, ``eval.num_repeats`` passes over the split, on all local devices. Images report
bits/dim (``likelihood.bits_per_dim``: +8 for [0, 1] data, +7 for centered), low-dimensional
data the negative log-likelihood in nats per example. Each result goes to
``<workdir>/eval/bpd_<step>.json`` and one log line.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import checkpointing, datasets, likelihood, models, parallel, progress, reporting
from score_sde import sde_lib, train_state
from score_sde.errors import ConfigError, DataError
from score_sde.models import utils as mutils

DEFAULT_TOY_EXAMPLES = 10000
SPLITS = ('train', 'test')


def steps_to_evaluate(available: Sequence[int], begin_ckpt: int, end_ckpt: int | None,
                      snapshot_freq: int) -> list[int]:
  """The stored steps s with begin_ckpt * snapshot_freq <= s <= end_ckpt * snapshot_freq."""
  lo = begin_ckpt * snapshot_freq
  hi = math.inf if end_ckpt is None else end_ckpt * snapshot_freq
  return [s for s in sorted(available) if lo <= s <= hi]


def is_image_data(config) -> bool:
  return config.data.image_size is not None


def get_eval_step(config, sde, model) -> Callable:
  """``step(params, batch, rng, axis_name=None) -> (values, mask, nfe)`` for one device's batch.

  values: (b,) bits/dim (images) or negative log-likelihood in nats (low-dimensional data);
  mask: (b,) False on padding; nfe: (b,) the solve's number of score evaluations.
  """
  ev = config.eval
  likelihood_fn = likelihood.get_likelihood_fn(
      sde, hutchinson_type=ev.likelihood_hutchinson_type, rtol=ev.likelihood_rtol,
      atol=ev.likelihood_atol, eps=ev.likelihood_eps)
  inverse_scaler = datasets.get_data_inverse_scaler(config)
  image = is_image_data(config)

  def step(params, batch, rng, axis_name=None):
    rng = jax.random.fold_in(rng, parallel.device_index(axis_name))
    score_fn = mutils.get_score_fn(sde, model, params, train=False,
                                   continuous=config.training.continuous)
    x = batch['image']
    logp, _, nfe = likelihood_fn(rng, score_fn, x)
    value = likelihood.bits_per_dim(logp, x.shape[1:], inverse_scaler) if image else -logp
    return (value, batch.get('mask', jnp.ones(x.shape[:1], bool)),
            jnp.full(x.shape[:1], nfe, jnp.float32))
  return step


def _num_batches(config, data_iter) -> int:
  """Batches per checkpoint: the finite pass, capped by ``eval.bpd_num_examples``."""
  cap = config.eval.bpd_num_examples
  if cap is None and not is_image_data(config):
    cap = DEFAULT_TOY_EXAMPLES
  n = getattr(data_iter, 'num_batches', None)
  if cap is not None:
    capped = math.ceil(cap / config.eval.batch_size)
    n = capped if n is None else min(n, capped)
  return n


def _get_data(config, num_devices: int):
  split = config.eval.bpd_dataset
  if split not in SPLITS:
    raise ConfigError(f'Unknown eval.bpd_dataset {split!r}; valid: {list(SPLITS)}.')
  if not is_image_data(config):
    return datasets.get_dataset(config, split, num_local_devices=num_devices,
                                batch_size=config.eval.batch_size)
  return datasets.get_dataset(config, split, num_local_devices=num_devices,
                              batch_size=config.eval.batch_size, evaluation=True,
                              num_repeats=config.eval.num_repeats, uniform_dequantization=True)


def evaluate_checkpoint(config, p_step, params, mesh, rng) -> dict:
  """Runs the likelihood over the split for one set of parameters (replicated over ``mesh``,
  ``p_step = parallel.per_example_step(get_eval_step(...), mesh)``); returns the summary.

  Per-example values are gathered on the host and reduced in float64 (a variance from float32
  sums of squares would cancel catastrophically); with several hosts, over all of them.
  """
  data_iter = _get_data(config, len(mesh.local_devices))
  values, nfes = [], []
  num_batches = _num_batches(config, data_iter)
  with progress.Progress(num_batches, 'likelihood', unit='batch') as bar:
    for i in range(num_batches):
      try:
        batch = next(data_iter)
      except StopIteration:
        break
      outputs = p_step(params, parallel.put_batch(batch, mesh), jax.random.fold_in(rng, i))
      value, mask, nfe = (parallel.fetch(o) for o in outputs)
      values.append(np.asarray(value, np.float64)[np.asarray(mask, bool)])
      nfes.append(np.asarray(nfe, np.float64))
      bar.update()
  values = np.concatenate(values) if values else np.zeros((0,))
  if values.size == 0:
    raise DataError(f'No examples in the {config.eval.bpd_dataset!r} split to evaluate.')
  std_err = values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else float('nan')
  return {'mean': float(values.mean()), 'std_err': float(std_err),
          'num_examples': int(values.size), 'mean_nfe': float(np.mean(np.concatenate(nfes)))}


def _write_result(workdir: str, step: int, result: dict) -> str:
  path = os.path.join(workdir, 'eval', f'bpd_{step}.json')
  if parallel.is_main_process():
    reporting.write_json(path, result)
  return path


def evaluate(config, workdir: str, devices: Sequence | None = None) -> dict[int, dict]:
  """Bits/dim (images) or NLL in nats (low-dimensional data) of each chosen checkpoint.

  Returns {step: result}; each result is also written to ``<workdir>/eval/bpd_<step>.json``.
  Raises ``ValueError`` if ``eval.enable_bpd`` is off or the split is unknown, and
  ``checkpointing.CheckpointError`` if no checkpoint is in range.
  """
  if not config.eval.enable_bpd:
    raise ConfigError('evaluate() computes likelihoods only; set --config.eval.enable_bpd=True.')
  mesh = parallel.make_mesh(list(devices) if devices and jax.process_count() == 1 else None)
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  p_step = parallel.per_example_step(get_eval_step(config, sde, model), mesh)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  available = ckpt.all_steps()
  ev = config.eval
  steps = steps_to_evaluate(available, ev.begin_ckpt, ev.end_ckpt, config.training.snapshot_freq)
  if not steps:
    raise checkpointing.CheckpointError(
        f'No checkpoint in {ckpt.directory} between snapshots {ev.begin_ckpt} and {ev.end_ckpt} '
        f'(steps {ev.begin_ckpt * config.training.snapshot_freq} to '
        f'{"any" if ev.end_ckpt is None else ev.end_ckpt * config.training.snapshot_freq}); '
        f'available steps: {available}. Change eval.begin_ckpt / eval.end_ckpt.')
  template = train_state.restore_template(config, model)
  metric = 'bpd' if is_image_data(config) else 'nll_nats'
  results = {}
  for step in steps:
    t0 = time.time()
    state, _ = ckpt.restore(template, step)
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
    summary = evaluate_checkpoint(config, p_step, parallel.replicate_global(state.ema_params, mesh),
                                  mesh, rng)
    results[step] = result = {
        'step': step, 'metric': metric, 'dataset': config.data.dataset,
        'split': ev.bpd_dataset, 'num_repeats': ev.num_repeats, **summary,
        'hutchinson_type': ev.likelihood_hutchinson_type, 'rtol': ev.likelihood_rtol,
        'atol': ev.likelihood_atol, 'eps': ev.likelihood_eps, 'seconds': time.time() - t0}
    path = _write_result(workdir, step, result)
    if parallel.is_main_process():
      print(f'step {step}: {ev.bpd_dataset} {metric} {result["mean"]:.4f} '
            f'+- {result["std_err"]:.4f} ({result["num_examples"]} examples, mean NFE '
            f'{result["mean_nfe"]:.0f}, {result["seconds"]:.1f}s) -> {path}', flush=True)
  ckpt.close()
  return results
