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
            and the linear denoiser (``loss_by_sigma``), plotted to ``loss_by_sigma_<step>.png``
Results are keyed by what produced them: each measurement of a checkpoint is stored with the
settings it used, as ``<eval_folder>/ckpt_<step>/<loss|likelihood|sampling>_<key>.json`` (key: a
hash of those settings: the ``eval.*`` keys it reads, the sampler's settings, the metrics), and
each sampling round as ``ckpt_<step>/samples_<key>/round_<r>.npz`` (samples; images also their
features), written to a temporary file and renamed. A rerun computes only what is missing for the
settings in hand: a newly enabled metric, another sampler or sample count, a finished round
skipped. ``report_<step>.json`` (what the current settings measured) and ``summary.md`` /
``summary.csv`` are rewritten from the stored results. ``eval_folder`` (``train.py
--eval_folder``, default ``eval``) is relative to the workdir or absolute. Digits samples are
also measured with the download-free digits classifier (``digits_classifier``: Fréchet distance
in its features to the train split and mean confidence; FID / KID / IS need
``eval.inception_weights`` there). The checkpoints must be this config's run
(``checkpointing``'s run identity), and the workdir writable, before any work. The Inception
network is injectable (``feature_fn``) so tests can use a stand-in.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from score_sde import checkpointing, datasets, generation, losses, models, parallel, reporting
from score_sde import progress, sde_lib, train_state
from score_sde.checkpointing import identity, posthoc
from score_sde.errors import ConfigError
from score_sde.evaluation import bpd, loss_by_sigma, toy_metrics

# images (N, H, W, C) uint8 -> {'pool_3': (N, d), 'logits_unbiased': (N, k)} numpy arrays.
FeatureFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def eval_dir(workdir: str, eval_folder: str = 'eval', ema_sigma_rel: float | None = None) -> str:
  """Where the results go: ``<workdir>/<eval_folder>`` (or an absolute ``eval_folder``); for
  the post-hoc EMA of length sigma_rel (``sampling.ema_sigma_rel``), other parameters,
  ``<eval_folder>_ema_sigma_rel_<sigma_rel>``."""
  if ema_sigma_rel is not None:
    eval_folder = f'{eval_folder}_ema_sigma_rel_{float(ema_sigma_rel):g}'
  return os.path.join(workdir, eval_folder)


def settings_key(settings: dict) -> str:
  """A short stable name for a measurement's settings (what a stored result is keyed by)."""
  text = json.dumps(settings, sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:10]


_LIKELIHOOD_KEYS = ('bpd_dataset', 'num_repeats', 'bpd_num_examples',
                    'likelihood_hutchinson_type', 'likelihood_rtol', 'likelihood_atol',
                    'likelihood_eps', 'batch_size')


def sample_settings(config) -> dict:
  """What the samples of a checkpoint depend on: the sampler, their number, the seed."""
  s = {f'sampling.{k}': v for k, v in config.sampling.to_dict().items() if k != 'batch_size'}
  ev = config.eval   # eval.batch_size is what the loop samples with
  return {**s, 'eval.num_samples': ev.num_samples, 'eval.batch_size': ev.batch_size,
          'seed': config.seed}


def measurements(config) -> dict[str, dict]:
  """The enabled measurements, each with the settings that produce it (config keys -> values)."""
  ev, found = config.eval, {}

  def of_eval(*keys):
    return {f'eval.{k}': ev.get(k) for k in keys}
  if ev.enable_loss:
    found['loss'] = {**of_eval('loss_num_examples', 'batch_size'), 'seed': config.seed}
  if ev.enable_bpd:
    found['likelihood'] = {**of_eval(*_LIKELIHOOD_KEYS), 'seed': config.seed}
  if ev.get('loss_by_sigma'):
    found['loss_by_sigma'] = {**of_eval('loss_by_sigma_examples', 'loss_by_sigma_reference',
                                        'batch_size'), 'seed': config.seed}
  if ev.enable_sampling:
    if bpd.is_image_data(config):
      metrics = {**of_eval('inception_weights', 'stats_path'),
                 'digits classifier': _digits_measured(config)}
    else:
      metrics = of_eval('toy_metrics', 'mmd_bandwidth', 'sw_projections')
      metrics['eval.toy_metrics'] = list(metrics['eval.toy_metrics'])
    found['sampling'] = {**sample_settings(config), **metrics}
  return found


def _digits_measured(config) -> bool:
  """Digits at the classifier's size are measured with it (no download)."""
  from score_sde.evaluation import digits_classifier
  return (config.data.dataset == 'digits' and config.data.image_size == digits_classifier.IMAGE_SIZE
          and config.data.num_channels == 1)


def _inception_needed(config) -> bool:
  return not _digits_measured(config) or config.eval.get('inception_weights') is not None


# ------------------------------------------------------------------------------------------------
# Set-up: everything that can fail on bad input, before any work
# ------------------------------------------------------------------------------------------------

def _check_config(config) -> None:
  ev = config.eval
  if not (ev.enable_loss or ev.enable_bpd or ev.enable_sampling or ev.get('loss_by_sigma')):
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


def _image_references(config, feature_fn: FeatureFn | None):
  """(feature_fn, reference statistics) for image sampling; a missing weights file or dataset
  fails here, before any checkpoint is touched."""
  from score_sde.evaluation import inception, reference_stats
  if not _inception_needed(config):
    return None, None
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


def _samples(config, sample_fn, params, step: int, out: str, feature_fn,
             rng) -> tuple[dict[str, np.ndarray], int]:
  """All rounds of a checkpoint (``generation.draw_rounds``: finished ones are read from disk),
  under a folder keyed by the sampling settings; returns the arrays (images: uint8 'samples',
  and 'pool_3', 'logits_unbiased' with a feature_fn; 2-D: 'samples') and the NFE."""
  def process(samples):
    if not bpd.is_image_data(config):
      return {'samples': samples}
    images = datasets.to_uint8(config, samples)
    return {'samples': images, **(feature_fn(images) if feature_fn is not None else {})}
  out_dir = os.path.join(out, f'ckpt_{step}', f'samples_{settings_key(sample_settings(config))}')
  return generation.draw_rounds(sample_fn, params, rng, config.eval.num_samples, out_dir, process,
                                label=f'step {step}: ')


def _digits_metrics(arrays: dict) -> dict:
  """Fréchet distance to the train split in the digits classifier's features, and its mean
  confidence (the classifier is trained once, then cached)."""
  from score_sde.evaluation import digits_classifier
  clf = digits_classifier.load_or_train()
  reference, _ = digits_classifier.split_images('train')
  q = digits_classifier.quality(clf, arrays['samples'].astype(np.float64) / 255.0, reference)
  return {'digits_fd': {'value': q['frechet'], 'std_err': None},
          'digits_confidence': {'value': q['confidence'], 'std_err': None}}


def _sample_metrics(config, arrays: dict, reference, rng) -> dict:
  ev = config.eval
  if not bpd.is_image_data(config):
    data = toy_metrics.reference_data(config.data.dataset, ev.num_samples)
    found = toy_metrics.compute(list(ev.toy_metrics), arrays['samples'], data,
                                config.data.dataset, rng,
                                {'mmd_bandwidth': ev.mmd_bandwidth,
                                 'sw_projections': ev.sw_projections})
    return {k: v for k, v in found.items() if v is not None}
  out = _digits_metrics(arrays) if _digits_measured(config) else {}
  if reference is None:
    return out
  from score_sde.evaluation import metrics
  out.update(metrics.image_metrics(arrays, reference))
  return out


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------

def evaluate(config, workdir: str, devices: Sequence | None = None,
             feature_fn: FeatureFn | None = None, eval_folder: str = 'eval') -> dict[int, dict]:
  """Evaluates the checkpoints of ``workdir`` chosen by ``config.eval``; returns {step: report}.

  Results go to ``eval_folder`` (relative to ``workdir``, or absolute); what is stored there for
  the same settings is reused (module docstring).

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

  evaluate_sigma = (loss_by_sigma.for_config(config, sde, model) if ev.get('loss_by_sigma')
                    else None)
  out = eval_dir(workdir, eval_folder, config.sampling.get('ema_sigma_rel'))
  wanted = measurements(config)

  def result_path(step, name):
    return os.path.join(out, f'ckpt_{step}', f'{name}_{settings_key(wanted[name])}.json')

  results = {}   # this run's results (on every host; the main one also writes them)

  def stored(step, name):
    if (step, name) in results:
      return results[step, name]
    found = reporting.read_json(result_path(step, name))
    return None if found is None else found['result']

  def measure(step, names):
    state, _ = ckpt.restore(template, step, config=config)
    state = state.replace(ema_params=posthoc.chosen_ema_params(config, workdir, state))
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
    for name in names:
      if name == 'loss':
        result = _loss(config, p_eval_step, parallel.replicate_global(state, mesh), mesh,
                       jax.random.fold_in(rng, 1))
      elif name == 'loss_by_sigma':
        found = evaluate_sigma(state.ema_params, jax.random.fold_in(rng, 5))
        result = loss_by_sigma.to_report(found)
        if parallel.is_main_process():
          loss_by_sigma.plot({f'step {step}': found},
                             os.path.join(out, f'loss_by_sigma_{step}.png'))
      elif name == 'likelihood':
        result = {'metric': 'bpd' if image else 'nll_nats', **bpd.evaluate_checkpoint(
            config, p_bpd_step, parallel.replicate_global(state.ema_params, mesh), mesh,
            jax.random.fold_in(rng, 2))}
      else:
        arrays, nfe = _samples(config, sample_fn, state.ema_params, step, out, feature_fn,
                               jax.random.fold_in(rng, 3))
        result = {'method': config.sampling.method, 'nfe': nfe,
                  'num_samples': int(len(arrays['samples'])),
                  **_sample_metrics(config, arrays, reference, jax.random.fold_in(rng, 4))}
      results[step, name] = result
      if parallel.is_main_process():
        reporting.write_json(result_path(step, name), {'settings': wanted[name], 'result': result})

  todo = {s: [n for n in wanted if stored(s, n) is None] for s in steps}
  todo = {s: names for s, names in todo.items() if names}
  reporting.say(f'Evaluating {len(steps)} checkpoints for {", ".join(wanted)} '
                f'({len(steps) - len(todo)} done before): {steps}')
  for step, names in todo.items():
    for name in names:
      if diffs := _other_settings(out, step, name, wanted[name]):
        reporting.say(f'step {step}: {name} is stored for other settings '
                      f'({identity.format_differences(diffs)}); computed for these too.')
  reports = {}
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  try:
    with progress.Progress(len(todo), 'evaluation', unit='checkpoint') as bar:
      for step in steps:
        if step in todo:
          measure(step, todo[step])
          bar.update()
        report = {'step': step, 'dataset': config.data.dataset}
        report.update({name: stored(step, name) for name in wanted})
        report_path = os.path.join(out, f'report_{step}.json')
        if parallel.is_main_process() and _as_json(reporting.read_json(report_path)) != _as_json(
            report):   # unchanged reports keep their files
          reporting.write_json(report_path, report)
        reports[step] = report
        if step in todo:
          bar.write(f'step {step}: {_summary_line(report)}')
  finally:
    ckpt.close()
  if parallel.is_main_process():
    paths = write_summary(reports, out)
    reporting.say('Wrote ' + ', '.join(paths))
  return reports


def _other_settings(out: str, step: int, name: str, settings: dict) -> list:
  """How the settings of another stored ``name`` result of ``step`` differ from ``settings``
  ((key, there, here); [] if there is none)."""
  directory = os.path.join(out, f'ckpt_{step}')
  if not os.path.isdir(directory):
    return []
  for file in sorted(os.listdir(directory)):
    if file.startswith(f'{name}_') and file.endswith('.json'):
      found = reporting.read_json(os.path.join(directory, file)) or {}
      diffs = identity.config_differences(found.get('settings', {}), settings, may_differ=())
      if diffs:
        return diffs
  return []


def _as_json(obj) -> str:
  return json.dumps(obj, sort_keys=True, default=str)


def _flatten(report: dict) -> dict[str, Any]:
  """{'loss': ..., 'bpd': ..., 'fid': ..., 'fid_se': ...}: one row of the summary table."""
  row = {'step': report['step']}
  if 'loss' in report:
    row['loss'], row['loss_se'] = report['loss']['mean'], report['loss']['std_err']
  if 'likelihood' in report:
    name = report['likelihood']['metric']
    row[name], row[name + '_se'] = report['likelihood']['mean'], report['likelihood']['std_err']
  for bucket, v in (report.get('loss_by_sigma') or {}).items():
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
