"""The paper's evaluation loop (``train.py --mode=eval``): checkpoints -> metrics, resumable.

For every stored checkpoint in [``eval.begin_ckpt``, ``eval.end_ckpt``] (snapshot i is step
i * ``training.snapshot_freq``), with the EMA parameters, on every device (``parallel``):
  loss      ``eval.enable_loss``: the training objective on the eval split, averaged over
            ``eval.loss_num_examples`` examples (batches of ``eval.batch_size``)
  bpd       ``eval.enable_bpd``: bits/dim (images) or NLL in nats (2-D) through the
            probability-flow ODE (``bpd.evaluate_checkpoint``)
  samples   ``eval.enable_sampling``: ``eval.num_samples`` samples with ``config.sampling``, in
            rounds of ``eval.batch_size`` (``generation.draw_rounds``); images: ``metrics.IMAGE_METRICS``
            (FID and KID on pool_3 against the reference statistics of ``reference_stats``, IS
            on the logits); 2-D data: ``eval.toy_metrics`` (``toy_metrics.METRICS``) against
            fresh data draws
  loss by sigma  ``eval.loss_by_sigma``: the loss per noise level next to the empirical optimum
            and the linear denoiser (``loss_by_sigma``), plotted to ``eval/loss_by_sigma_<step>.png``
The results are tied to the config that produced them: ``ckpt_<step>/config.json`` records it,
and a rerun whose config differs in anything but ``RESULTS_MAY_DIFFER`` (run length, the
checkpoint range, data loading) recomputes that checkpoint instead of reusing its numbers. The
checkpoints must be this config's run (``checkpointing``'s run identity), and the workdir
writable, before any work.
Resuming: each sampling round is saved as ``<workdir>/eval/ckpt_<step>/round_<r>.npz`` (samples;
images also their features), the loss / bpd results as ``ckpt_<step>/partial.json`` and the
checkpoint's report as ``eval/report_<step>.json``, each written to a temporary file and renamed;
a rerun skips finished checkpoints and rounds. ``eval/summary.md`` / ``summary.csv`` tabulate all
reports. The Inception network is injectable (``feature_fn``) so tests can use a stand-in.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from score_sde import checkpointing, datasets, generation, losses, models, parallel, reporting
from score_sde import sde_lib, train_state
from score_sde.checkpointing import identity, posthoc
from score_sde.errors import ConfigError
from score_sde.evaluation import bpd, loss_by_sigma, toy_metrics

# Config keys that do not change a checkpoint's numbers: stored results made with other values
# are reused.
RESULTS_MAY_DIFFER = (
    'training.n_iters', 'training.log_freq', 'training.eval_freq', 'training.snapshot_freq',
    'training.snapshot_freq_for_preemption', 'training.snapshot_sampling',
    'training.distributed', 'eval.begin_ckpt', 'eval.end_ckpt', 'data.num_workers',
    'data.prefetch', 'data.data_dir', 'data.path')

# images (N, H, W, C) uint8 -> {'pool_3': (N, d), 'logits_unbiased': (N, k)} numpy arrays.
FeatureFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def eval_dir(workdir: str, ema_sigma_rel: float | None = None) -> str:
  """Where the reports go: ``<workdir>/eval``, or for the post-hoc EMA of length sigma_rel
  (``sampling.ema_sigma_rel``) ``<workdir>/eval_ema_sigma_rel_<sigma_rel>``: other parameters."""
  if ema_sigma_rel is None:
    return os.path.join(workdir, 'eval')
  return os.path.join(workdir, f'eval_ema_sigma_rel_{float(ema_sigma_rel):g}')


# ------------------------------------------------------------------------------------------------
# Set-up: everything that can fail on bad input, before any work
# ------------------------------------------------------------------------------------------------

def _check_config(config) -> None:
  ev = config.eval
  if not (ev.enable_loss or ev.enable_bpd or ev.enable_sampling or ev.loss_by_sigma):
    raise ConfigError('Nothing to evaluate: set eval.enable_loss, eval.enable_bpd, '
                      'eval.enable_sampling or eval.loss_by_sigma.')
  if ev.enable_sampling and not bpd.is_image_data(config):
    toy_metrics.check_metric_names(ev.toy_metrics)
  if ev.enable_sampling and ev.num_samples < 2:
    raise ConfigError(f'eval.num_samples must be >= 2, got {ev.num_samples}.')


def _steps(config, workdir: str) -> list[int]:
  ckpt_dir = checkpointing.checkpoint_dir(workdir)
  available = []
  if os.path.isdir(ckpt_dir):
    ckpt = checkpointing.Checkpointer(ckpt_dir, read_only=True)
    available = ckpt.all_steps()
    ckpt.close()
  ev, freq = config.eval, config.training.snapshot_freq
  steps = bpd.steps_to_evaluate(available, ev.begin_ckpt, ev.end_ckpt, freq)
  if not steps:
    hi = 'any' if ev.end_ckpt is None else ev.end_ckpt * freq
    raise ConfigError(
        f'No checkpoint in {ckpt_dir} between snapshots eval.begin_ckpt={ev.begin_ckpt} and '
        f'eval.end_ckpt={ev.end_ckpt} (steps {ev.begin_ckpt * freq} to {hi}); available steps: '
        f'{available}. Change eval.begin_ckpt / eval.end_ckpt.')
  return steps


def _settings_path(workdir: str, step: int) -> str:
  return os.path.join(eval_dir(workdir), f'ckpt_{step}', 'config.json')


def _stale_results(config, workdir: str, step: int) -> list | None:
  """None if checkpoint ``step`` has no stored results or they were made with ``config``;
  otherwise the differences ((key, there, here); [] for results that recorded no config)."""
  out = eval_dir(workdir)
  stored = [os.path.join(out, f'report_{step}.json'), os.path.join(out, f'ckpt_{step}')]
  if not any(os.path.exists(p) for p in stored):
    return None
  recorded = reporting.read_json(_settings_path(workdir, step))
  if recorded is None:
    return []
  diffs = identity.config_differences(recorded, identity.config_to_dict(config),
                                      may_differ=RESULTS_MAY_DIFFER)
  return diffs or None


def _start_results(config, workdir: str, step: int, stale: bool) -> None:
  """Removes the results of another config for ``step``, then records this config as the one
  its results (from now on) are computed with."""
  out = eval_dir(workdir)
  if stale:
    shutil.rmtree(os.path.join(out, f'ckpt_{step}'), ignore_errors=True)
    for name in (f'report_{step}.json', f'bpd_{step}.json'):
      if os.path.exists(os.path.join(out, name)):
        os.remove(os.path.join(out, name))
  if not os.path.exists(_settings_path(workdir, step)):
    reporting.write_json(_settings_path(workdir, step), identity.config_to_dict(config))


def _image_references(config, feature_fn: FeatureFn | None):
  """(feature_fn, reference statistics) for image sampling; a missing weights file or dataset
  fails here, before any checkpoint is touched."""
  from score_sde.evaluation import inception, reference_stats
  if feature_fn is None:
    feature_fn = inception.get_feature_fn(
        inception.load_variables(config.eval.get('inception_weights')))
  return feature_fn, reference_stats.get_reference_stats(config, feature_fn=feature_fn)


# ------------------------------------------------------------------------------------------------
# The three measurements of one checkpoint
# ------------------------------------------------------------------------------------------------

def _loss(config, p_eval_step, p_state, mesh, rng) -> dict:
  """Mean eval-split loss over ``eval.loss_num_examples`` examples (whole batches)."""
  it = datasets.get_dataset(config, 'test', num_local_devices=len(mesh.local_devices),
                            batch_size=config.eval.batch_size)
  num_batches = max(1, math.ceil(config.eval.loss_num_examples / config.eval.batch_size))
  losses = []
  for i in range(num_batches):
    _, metrics = p_eval_step(p_state, parallel.put_batch(next(it), mesh),
                             jax.random.fold_in(rng, i))
    losses.append(float(np.asarray(parallel.to_local(metrics['loss']))))
  losses = np.asarray(losses, np.float64)
  se = losses.std(ddof=1) / math.sqrt(len(losses)) if len(losses) > 1 else float('nan')
  return {'mean': float(losses.mean()), 'std_err': float(se),
          'num_examples': num_batches * config.eval.batch_size}


def _samples(config, sample_fn, params, step: int, workdir: str, feature_fn,
             rng) -> tuple[dict[str, np.ndarray], int]:
  """All rounds of a checkpoint (``generation.draw_rounds``: finished ones are read from disk);
  returns the arrays (images: uint8 'samples', 'pool_3', 'logits_unbiased'; 2-D: 'samples') and
  the NFE."""
  def process(samples):
    if not bpd.is_image_data(config):
      return {'samples': samples}
    images = datasets.to_uint8(config, samples)
    return {'samples': images, **feature_fn(images)}
  out_dir = os.path.join(eval_dir(workdir, config.sampling.get('ema_sigma_rel')), f'ckpt_{step}')
  return generation.draw_rounds(sample_fn, params, rng, config.eval.num_samples, out_dir, process,
                                label=f'step {step}: ')


def _sample_metrics(config, arrays: dict, reference, rng) -> dict:
  ev = config.eval
  if not bpd.is_image_data(config):
    data = toy_metrics.reference_data(config.data.dataset, ev.num_samples)
    found = toy_metrics.compute(list(ev.toy_metrics), arrays['samples'], data,
                                config.data.dataset, rng,
                                {'mmd_bandwidth': ev.mmd_bandwidth,
                                 'sw_projections': ev.sw_projections})
    return {k: v for k, v in found.items() if v is not None}
  from score_sde.evaluation import metrics
  return metrics.image_metrics(arrays, reference)


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------

def evaluate(config, workdir: str, devices: Sequence | None = None,
             feature_fn: FeatureFn | None = None) -> dict[int, dict]:
  """Evaluates the checkpoints of ``workdir`` chosen by ``config.eval``; returns {step: report}.

  feature_fn: images (N, H, W, C) uint8 -> {'pool_3', 'logits_unbiased'}; default the FID
  Inception with ``eval.inception_weights`` (only loaded when image sampling is enabled).
  Raises ``ConfigError`` (nothing enabled, an empty checkpoint range, unknown metric) or
  ``MissingFileError`` (no Inception weights) before any work.
  """
  _check_config(config)
  checkpointing.check_run_config(config, workdir)   # another run's checkpoints, a read-only disk
  mesh = parallel.make_mesh(list(devices) if devices and jax.process_count() == 1 else None)
  ev = config.eval
  steps = _steps(config, workdir)
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  image = bpd.is_image_data(config)
  reference = None
  if ev.enable_sampling and image:
    feature_fn, reference = _image_references(config, feature_fn)
  try:
    parallel.per_device_batch_size(ev.batch_size, len(mesh.local_devices))
  except ValueError as e:
    raise ConfigError(f'eval.batch_size: {e}') from e
  optimizer = train_state.get_optimizer(config.optim)
  # Shapes only: orbax restores into them, and nothing is computed (an eager Flax init compiles
  # every op of the network once).
  template = jax.eval_shape(lambda: train_state.restore_template(config, model))
  p_eval_step = p_bpd_step = sample_fn = None
  if ev.enable_loss:
    p_eval_step = parallel.data_parallel_step(
        losses.metrics_only(losses.get_step_fns(config, sde, model, optimizer)[1]), mesh,
        donate=False)
  if ev.enable_bpd:
    p_bpd_step = parallel.per_example_step(bpd.get_eval_step(config, sde, model), mesh)
  if ev.enable_sampling:
    sampling_config = config.copy_and_resolve_references()
    sampling_config.sampling.batch_size = ev.batch_size
    sample_fn = generation.get_sample_fn(sampling_config, sde, model, mesh.devices.flat)

  evaluate_sigma = loss_by_sigma.for_config(config, sde, model) if ev.loss_by_sigma else None

  out = eval_dir(workdir, config.sampling.get('ema_sigma_rel'))
  reports, t_start, done_now = {}, time.time(), 0
  stale = {s: d for s in steps if (d := _stale_results(config, workdir, s)) is not None}
  todo = [s for s in steps
          if s in stale or reporting.read_json(os.path.join(out, f'report_{s}.json')) is None]
  redo = ''
  if stale:
    diffs = next((d for d in stale.values() if d), [])
    redo = (f'; {len(stale)} with results of other settings, recomputed: '
            f'{identity.format_differences(diffs) if diffs else "settings not recorded"}')
  reporting.say(f'Evaluating {len(steps)} checkpoints ({len(steps) - len(todo)} done before'
                f'{redo}): {steps}')
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  try:
    for step in steps:
      report_path = os.path.join(out, f'report_{step}.json')
      reports[step] = None if step in stale else reporting.read_json(report_path)
      if reports[step] is not None:
        continue
      t0 = time.time()
      state, _ = ckpt.restore(template, step, config=config)
      state = state.replace(ema_params=posthoc.chosen_ema_params(config, workdir, state))
      if parallel.is_main_process():
        _start_results(config, workdir, step, step in stale)
      rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
      partial_path = os.path.join(out, f'ckpt_{step}', 'partial.json')
      report = reporting.read_json(partial_path) or {'step': step, 'dataset': config.data.dataset}
      if ev.enable_loss and 'loss' not in report:
        report['loss'] = _loss(config, p_eval_step, parallel.replicate_global(state, mesh), mesh,
                               jax.random.fold_in(rng, 1))
        reporting.write_json(partial_path, report)
      if evaluate_sigma is not None and 'loss_by_sigma' not in report:
        result = evaluate_sigma(state.ema_params, jax.random.fold_in(rng, 5))
        report['loss_by_sigma'] = loss_by_sigma.to_report(result)
        if parallel.is_main_process():
          loss_by_sigma.plot({f'step {step}': result},
                             os.path.join(out, f'loss_by_sigma_{step}.png'))
        reporting.write_json(partial_path, report)
      p_params = parallel.replicate_global(state.ema_params, mesh)
      if ev.enable_bpd and 'likelihood' not in report:
        report['likelihood'] = {'metric': 'bpd' if image else 'nll_nats', **bpd.evaluate_checkpoint(
            config, p_bpd_step, p_params, mesh, jax.random.fold_in(rng, 2))}
        reporting.write_json(partial_path, report)
        bpd._write_result(workdir, step, {'step': step, **report['likelihood']})
      if ev.enable_sampling:
        arrays, nfe = _samples(config, sample_fn, state.ema_params, step, workdir, feature_fn,
                               jax.random.fold_in(rng, 3))
        report['sampling'] = {'method': config.sampling.method, 'nfe': nfe,
                              'num_samples': int(len(arrays['samples'])),
                              **_sample_metrics(config, arrays, reference,
                                                jax.random.fold_in(rng, 4))}
      report['seconds'] = time.time() - t0
      if parallel.is_main_process():
        reporting.write_json(report_path, report)
      reports[step] = report
      done_now += 1
      eta = (time.time() - t_start) / done_now * (len(todo) - done_now)
      reporting.say(f'step {step}: {_summary_line(report)}  ({report["seconds"]:.1f}s; '
                    f'ETA {reporting.format_eta(eta)})')
  finally:
    ckpt.close()
  if parallel.is_main_process():
    paths = write_summary(reports, out)
    reporting.say('Wrote ' + ', '.join(paths))
  return reports


def _flatten(report: dict) -> dict[str, Any]:
  """{'loss': ..., 'bpd': ..., 'fid': ..., 'fid_se': ...}: one row of the summary table."""
  row = {'step': report['step']}
  if 'loss' in report:
    row['loss'], row['loss_se'] = report['loss']['mean'], report['loss']['std_err']
  if 'likelihood' in report:
    name = report['likelihood']['metric']
    row[name], row[name + '_se'] = report['likelihood']['mean'], report['likelihood']['std_err']
  for bucket, v in report.get('loss_by_sigma', {}).items():
    if v['model'] is not None:
      row[f'loss_sigma_{bucket}'] = v['model']
  if 'sampling' in report:
    row['nfe'] = report['sampling']['nfe']
    for k, v in report['sampling'].items():
      if isinstance(v, dict):
        row[k], row[k + '_se'] = v['value'], v['std_err']
  return row


def _summary_line(report: dict) -> str:
  row = _flatten(report)
  return ', '.join(f'{k} {v:.5g}' for k, v in row.items()
                   if k != 'step' and not k.endswith('_se') and v is not None)


def write_summary(reports: dict[int, dict], out: str) -> list[str]:
  """``summary.csv`` (every number) and ``summary.md`` (value ± standard error) over steps."""
  rows = [_flatten(reports[s]) for s in sorted(reports)]
  fields = list(dict.fromkeys(k for r in rows for k in r))
  names = [k for k in fields if not k.endswith('_se')]

  def cell(r, k):
    if k in ('step', 'nfe') and r.get(k) is not None:
      return str(int(r[k]))
    return reporting.format_value(r.get(k), r.get(k + '_se'), digits=5)
  md_path = reporting.write_text(os.path.join(out, 'summary.md'), reporting.markdown_table(
      names, [[cell(r, k) for k in names] for r in rows]))
  return [md_path, reporting.write_csv(os.path.join(out, 'summary.csv'), rows)]
