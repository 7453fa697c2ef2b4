"""Running an experiment: train each variant once (or restore the run it names), then every
cell; each result is stored as it finishes, so an interrupted run resumes without redoing
finished cells.

Images: a cell draws its samples in rounds of ``spec.batch_size`` on every device of every host
(``generation.draw_rounds``: each round, as uint8 pixels with the features its metrics read, is
stored as it finishes, so a preempted cell resumes mid-way), then computes the image metrics
(``scoring.Scorer``: networks and reference statistics loaded once per dataset). ``bpd``
is computed once per model (``bpd.evaluate_checkpoint``: the probability-flow likelihood of the
test split with uniform dequantisation) and stored beside the cells."""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from score_sde import (checkpointing, datasets, generation, models, parallel, reporting, sde_lib,
                       train_state, training)
from score_sde.checkpointing import identity
from score_sde.errors import ConfigError
from score_sde.evaluation import bpd, scoring, toy_metrics
from score_sde.experiments.report import aggregate, describe, write_plots, write_tables
from score_sde.experiments.spec import MODEL_METRICS, Cell, Variant, load_spec, model_key, plan

PICTURE_SAMPLES = 256   # image samples kept per cell for the pictures (all of them for 2-D data)

def _read_cell(path: str, key: dict) -> dict | None:
  """The stored result of a cell, None if not there; a ConfigError if another spec made it."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  if not _same_key(result.get('key') or {}, key):
    raise ConfigError(f'{path} holds the result of a different spec for this cell; use a new '
                      '--workdir (or move that directory away) to run a changed spec.')
  return result


def _same_key(stored: dict, key: dict) -> bool:
  """Equal keys, except that the variant configs ('base') are compared on the keys both have:
  a config key added to the schema since the cell was stored does not invalidate it."""
  rest = lambda k: {name: v for name, v in k.items() if name != 'base'}
  return rest(stored) == rest(key) and not identity.config_differences(
      stored.get('base') or {}, key.get('base') or {}, may_differ=())


def _train(variant: Variant, workdir: str, devices) -> tuple[Any, float | None]:
  """EMA parameters of the variant's model, trained (or resumed) in its own sub-workdir, or
  restored from the run it names.

  Returns (params, seconds of training done by this call, or the first call's when the model was
  already complete; None for a named run).
  """
  if variant.run is not None:
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(variant.run), read_only=True)
    try:
      state, _ = ckpt.restore(jax.eval_shape(lambda: train_state.restore_template(variant.config)),
                              variant.step, config=variant.config)
    finally:
      ckpt.close()
    return state.ema_params, None
  model_dir = os.path.join(workdir, 'models', variant.name)
  done_path = os.path.join(model_dir, 'experiment_train.json')
  t0 = time.time()
  state = training.train_and_evaluate(variant.config, model_dir, devices)
  if int(state.step) < variant.config.training.n_iters:   # stopped early by SIGTERM / Ctrl-C
    raise KeyboardInterrupt(f'Training of {variant.name} stopped at step {int(state.step)} (saved); '
                            'run the same command again to resume.')
  if os.path.exists(done_path):
    with open(done_path) as f:
      seconds = json.load(f)['train_seconds']
  else:
    seconds = time.time() - t0
    reporting.write_json(done_path, {'train_seconds': seconds, 'steps': int(state.step)}, indent=1)
  return state.ema_params, seconds


class _SamplerCache:
  """One compiled sampler per (model, SDE, sampler settings), shared by the variants (e.g.
  datasets, seeds) that differ only in their parameters."""

  def __init__(self, devices):
    self._devices = devices
    self._built: dict[str, generation.SampleFn] = {}

  def __call__(self, config, params, rng) -> tuple[generation.SampleFn, float]:
    """(sample_fn, seconds spent compiling now)."""
    key = json.dumps([config.training.sde, config.training.continuous, config.model.to_dict(),
                      config.sampling.to_dict(), list(datasets.sample_shape(config))],
                     sort_keys=True, default=str)
    if key in self._built:
      return self._built[key], 0.0
    t0 = time.time()
    sde, model = sde_lib.get_sde(config), models.get_model(config)
    fn = generation.get_sample_fn(config, sde, model, self._devices)
    fn.compile(fn.put_params(params), {}, rng)
    self._built[key] = fn
    return fn, time.time() - t0


def _run_cell(cell: Cell, spec, params, cache: _SamplerCache, scorer, cell_dir: str
              ) -> tuple[dict, np.ndarray]:
  config = cell.config
  rng = jax.random.PRNGKey(cell.seed)
  fn, compile_seconds = cache(config, params, rng)
  t0 = time.time()
  if cell.variant.is_image:
    def process(samples):
      images = datasets.to_uint8(config, samples)
      return {'samples': images, 'finite': np.isfinite(samples).reshape(len(samples), -1).all(1),
              **scorer.features(images)}
    arrays, nfe = generation.draw_rounds(fn, params, rng, spec.num_samples,
                                         os.path.join(cell_dir, cell.name + '.rounds'), process,
                                         label=f'{cell.name}: ')
    sample_seconds = time.time() - t0
    metrics = scorer.compute(arrays)
    samples, num_finite = arrays['samples'][:PICTURE_SAMPLES], int(arrays['finite'].sum())
  else:
    samples, _, nfe = generation.draw(fn, params, rng, spec.num_samples)
    sample_seconds = time.time() - t0
    data = toy_metrics.reference_data(config.data.dataset, spec.num_samples, cell.seed)
    metrics = toy_metrics.compute(list(spec.metrics), samples, data, config.data.dataset,
                                  jax.random.fold_in(rng, 1), spec.metric_options.to_dict())
    num_finite = int(np.isfinite(samples).all(-1).sum())
  return {'cell': cell.name, 'variant': cell.variant.name, 'sampler': cell.sampler,
          'nfe_budget': cell.nfe_budget, 'seed': cell.seed, 'nfe': nfe, 'metrics': metrics,
          'sample_seconds': sample_seconds, 'compile_seconds': compile_seconds,
          'num_finite': num_finite}, samples


def _model_metrics(variant: Variant, spec, params, devices) -> dict:
  """{'bpd': {'value', 'std_err', 'nfe', 'num_examples', 'seconds', ...}} of one model."""
  config = variant.config
  t0 = time.time()
  mesh = parallel.make_mesh(list(devices) if jax.process_count() == 1 else None)
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  step = parallel.per_example_step(bpd.get_eval_step(config, sde, model), mesh)
  found = bpd.evaluate_checkpoint(config, step, parallel.replicate_global(params, mesh), mesh,
                                  jax.random.PRNGKey(config.seed))
  ev = config.eval
  return {'bpd': {'value': found['mean'], 'std_err': found['std_err'], 'nfe': found['mean_nfe'],
                  'num_examples': found['num_examples'], 'split': ev.bpd_dataset,
                  'num_repeats': ev.num_repeats, 'rtol': ev.likelihood_rtol,
                  'atol': ev.likelihood_atol, 'hutchinson_type': ev.likelihood_hutchinson_type,
                  'seconds': time.time() - t0}}


def _scorers(spec, variants: list[Variant], feature_fn) -> dict:
  """One ``scoring.Scorer`` per image dataset (and size) of the spec, built before any
  work: a missing Inception weights file stops the run here."""
  names = [m for m in spec.metrics if m not in MODEL_METRICS]
  scorers = {}
  for variant in variants:
    key = _dataset_key(variant.config)
    if variant.is_image and names and key not in scorers:
      scorers[key] = scoring.Scorer(names, variant.config, spec.metric_options.to_dict(),
                                          feature_fn)
  return scorers


def _dataset_key(config) -> str:
  data = config.data
  return json.dumps([data.dataset, data.get('image_size'), data.get('path'),
                     config.eval.get('stats_path')], default=str)


def dry_run(spec) -> str:
  """The plan and its cost (models, cells, samples, NFE), printed and returned; nothing runs."""
  spec = load_spec(spec)
  text = describe(spec, *plan(spec))
  reporting.say(text)
  return text


def run(spec, workdir: str, devices: Sequence | None = None,
        on_cell: Callable[[Cell, dict], None] | None = None,
        feature_fn: scoring.FeatureFn | None = None) -> list[dict]:
  """Runs (or resumes) the comparison ``spec`` in ``workdir``; returns the table's rows.

  ``on_cell(cell, result)`` is called after each newly computed cell is stored (progress hooks,
  tests). Rows are also written to ``results.md`` / ``results.csv`` with the plots.
  ``feature_fn`` stands in for the Inception network (tests); by default it is loaded from
  ``metric_options.inception_weights``. Everything that can fail on bad input fails before
  anything is written.
  """
  spec = load_spec(spec)
  variants, cells = plan(spec)
  devices = list(devices or jax.local_devices())
  checkpointing.check_workdir(workdir)
  scorers = _scorers(spec, variants, feature_fn)
  os.makedirs(workdir, exist_ok=True)
  reporting.write_json(os.path.join(workdir, 'spec.json'), json.loads(spec.to_json_best_effort()),
                       indent=1)
  cell_dir = os.path.join(workdir, 'cells')
  os.makedirs(cell_dir, exist_ok=True)
  results = _read_cells(spec, cells, cell_dir)
  model_results = {v: _read_cell(_model_path(cell_dir, v), model_key(v, spec)) for v in variants}
  wants_model_metrics = any(m in MODEL_METRICS for m in spec.metrics)
  todo = [c for c in cells if results[c] is None]
  skipped = [c for c in cells if c.skipped]
  reporting.say(f'{len(variants)} variants, {len(cells)} cells: '
                f'{len(cells) - len(todo) - len(skipped)} done, {len(todo)} to run'
                + (f', {len(skipped)} skipped' if skipped else '') + f'; results in {workdir}')
  for reason in dict.fromkeys(c.skipped for c in skipped):
    reporting.say(f'Skipped: {reason}.')
  cache, clock = _SamplerCache(devices), _Eta(len(todo), len({c.variant for c in todo}))
  for variant in variants:
    mine = [c for c in todo if c.variant == variant]
    model_todo = wants_model_metrics and model_results[variant] is None
    if not mine and not model_todo:
      continue
    t0 = time.time()
    params, train_seconds = _train(variant, workdir, devices)
    clock.trained(time.time() - t0)
    if model_todo:
      model_results[variant] = {'key': model_key(variant, spec),
                                **_model_metrics(variant, spec, params, devices)}
      if parallel.is_main_process():
        reporting.write_json(_model_path(cell_dir, variant), model_results[variant], indent=1)
      reporting.say(f'{variant.name}: {_metric_summary(model_results[variant])}')
    scorer = scorers.get(_dataset_key(variant.config))
    for cell in mine:
      t0 = time.time()
      result, samples = _run_cell(cell, spec, params, cache, scorer, cell_dir)
      result.update(key=cell.key(spec), train_seconds=train_seconds)
      if parallel.is_main_process():
        np.save(os.path.join(cell_dir, cell.name + '.npy'), samples)
        reporting.write_json(os.path.join(cell_dir, cell.name + '.json'), result, indent=1)
        shutil.rmtree(os.path.join(cell_dir, cell.name + '.rounds'), ignore_errors=True)
      results[cell] = result
      clock.cell_done(time.time() - t0)
      reporting.say(f'[{len(cells) - clock.cells_left}/{len(cells)}] {cell.name}: NFE {result["nfe"]}, '
           f'{_metric_summary(result["metrics"])}  ETA {reporting.format_eta(clock.eta())}')
      if on_cell is not None:
        on_cell(cell, result)
  return _write_results(spec, cells, results, model_results, workdir)


def _read_cells(spec, cells: list[Cell], cell_dir: str) -> dict:
  """{cell: its stored result, None if not yet run, {'skipped': why} for a cell that is not
  run (``Cell.skipped``)}."""
  return {c: ({'skipped': c.skipped} if c.skipped else
              _read_cell(os.path.join(cell_dir, c.name + '.json'), c.key(spec))) for c in cells}


def _model_path(cell_dir: str, variant: Variant) -> str:
  return os.path.join(cell_dir, variant.name + '__model.json')


def report(spec, workdir: str) -> list[dict]:
  """Tables and plots of the cells finished so far (e.g. while ``run`` is still going, or
  after it was stopped); computes nothing. Rows lack the seeds whose cells are missing."""
  spec = load_spec(spec)
  variants, cells = plan(spec)
  cell_dir = os.path.join(workdir, 'cells')
  results = _read_cells(spec, cells, cell_dir)
  model_results = {v: _read_cell(_model_path(cell_dir, v), model_key(v, spec)) for v in variants}
  done = [c for c in cells if results[c] is not None]
  if not any(c for c in done if not c.skipped):
    raise ConfigError(f'No finished cell of this spec in {workdir}/cells.')
  reporting.say(f'{len(done)} of {len(cells)} cells finished.')
  return _write_results(spec, done, results, model_results, workdir)


def _write_results(spec, cells: list[Cell], results: dict, model_results: dict,
                   workdir: str) -> list[dict]:
  rows = aggregate(spec, cells, results, model_results)
  if not parallel.is_main_process():
    return rows
  paths = write_tables(rows, spec, workdir) + write_plots(rows, spec, cells, workdir)
  reporting.say('Wrote ' + ', '.join(paths))
  return rows


class _Eta:
  """Time left: the mean training time so far x models left, plus the mean cell time so far
  x cells left (a cell's time includes compiling its sampler when no earlier cell did)."""

  def __init__(self, cells: int, models: int):
    self.cells_left, self.models_left = cells, models
    self._train, self._cells, self._trained, self._done = 0.0, 0.0, 0, 0

  def trained(self, seconds: float):
    self._train += seconds
    self._trained += 1
    self.models_left -= 1

  def cell_done(self, seconds: float):
    self._cells += seconds
    self._done += 1
    self.cells_left -= 1

  def eta(self) -> float:
    return (self._train / max(self._trained, 1) * self.models_left
            + self._cells / max(self._done, 1) * self.cells_left)


def _metric_summary(metrics: dict) -> str:
  return ', '.join(f'{k} {v["value"]:.4g}' for k, v in metrics.items()
                   if isinstance(v, dict) and 'value' in v)
