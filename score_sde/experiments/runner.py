"""Running an experiment: train each variant once, then every cell; each result is stored as it
finishes, so an interrupted run resumes without redoing finished cells."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from score_sde import checkpointing, datasets, generation, models, reporting, sde_lib, training
from score_sde.errors import ConfigError
from score_sde.evaluation import toy_metrics
from score_sde.experiments.report import aggregate, write_plots, write_tables
from score_sde.experiments.spec import Cell, Variant, load_spec, plan

def _read_cell(path: str, key: dict) -> dict | None:
  """The stored result of a cell, None if not there; a ConfigError if another spec made it."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  if result.get('key') != key:
    raise ConfigError(f'{path} holds the result of a different spec for this cell; use a new '
                      '--workdir (or move that directory away) to run a changed spec.')
  return result


def _train(variant: Variant, workdir: str, devices) -> tuple[Any, float | None]:
  """EMA parameters of the variant's model, trained (or resumed) in its own sub-workdir.

  Returns (params, seconds of training done by this call, or the first call's when the model was
  already complete).
  """
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


def _run_cell(cell: Cell, spec, params, cache: _SamplerCache) -> tuple[dict, np.ndarray]:
  config = cell.config
  rng = jax.random.PRNGKey(cell.seed)
  fn, compile_seconds = cache(config, params, rng)
  t0 = time.time()
  samples, _, nfe = generation.draw(fn, params, rng, spec.num_samples)
  sample_seconds = time.time() - t0
  data = toy_metrics.reference_data(config.data.dataset, spec.num_samples, cell.seed)
  metrics = toy_metrics.compute(list(spec.metrics), samples, data, config.data.dataset,
                                jax.random.fold_in(rng, 1), spec.metric_options.to_dict())
  return {'cell': cell.name, 'variant': cell.variant.name, 'sampler': cell.sampler,
          'nfe_budget': cell.nfe_budget, 'seed': cell.seed, 'nfe': nfe, 'metrics': metrics,
          'sample_seconds': sample_seconds, 'compile_seconds': compile_seconds,
          'num_finite': int(np.isfinite(samples).all(-1).sum())}, samples


def run(spec, workdir: str, devices: Sequence | None = None,
        on_cell: Callable[[Cell, dict], None] | None = None) -> list[dict]:
  """Runs (or resumes) the comparison ``spec`` in ``workdir``; returns the table's rows.

  ``on_cell(cell, result)`` is called after each newly computed cell is stored (progress hooks,
  tests). Rows are also written to ``results.md`` / ``results.csv`` with the plots.
  """
  spec = load_spec(spec)
  variants, cells = plan(spec)
  devices = list(devices or jax.local_devices())
  checkpointing.check_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  reporting.write_json(os.path.join(workdir, 'spec.json'), json.loads(spec.to_json_best_effort()),
                       indent=1)
  cell_dir = os.path.join(workdir, 'cells')
  os.makedirs(cell_dir, exist_ok=True)
  results = {c: _read_cell(os.path.join(cell_dir, c.name + '.json'), c.key(spec)) for c in cells}
  todo = [c for c in cells if results[c] is None]
  reporting.say(f'{len(variants)} variants, {len(cells)} cells: {len(cells) - len(todo)} done, '
       f'{len(todo)} to run; results in {workdir}')
  cache, clock = _SamplerCache(devices), _Eta(len(todo), len({c.variant for c in todo}))
  for variant in variants:
    mine = [c for c in todo if c.variant == variant]
    if not mine:
      continue
    t0 = time.time()
    params, train_seconds = _train(variant, workdir, devices)
    clock.trained(time.time() - t0)
    for cell in mine:
      t0 = time.time()
      result, samples = _run_cell(cell, spec, params, cache)
      result.update(key=cell.key(spec), train_seconds=train_seconds)
      if cell.seed == spec.seeds[0]:   # pictures use the first seed's samples
        np.save(os.path.join(cell_dir, cell.name + '.npy'), samples)
      reporting.write_json(os.path.join(cell_dir, cell.name + '.json'), result, indent=1)
      results[cell] = result
      clock.cell_done(time.time() - t0)
      reporting.say(f'[{len(cells) - clock.cells_left}/{len(cells)}] {cell.name}: NFE {result["nfe"]}, '
           f'{_metric_summary(result["metrics"])}  ETA {reporting.format_eta(clock.eta())}')
      if on_cell is not None:
        on_cell(cell, result)
  return _write_results(spec, cells, results, workdir)


def report(spec, workdir: str) -> list[dict]:
  """Tables and plots of the cells finished so far (e.g. while ``run`` is still going, or
  after it was stopped); computes nothing. Rows lack the seeds whose cells are missing."""
  spec = load_spec(spec)
  _, cells = plan(spec)
  results = {c: _read_cell(os.path.join(workdir, 'cells', c.name + '.json'), c.key(spec))
             for c in cells}
  done = [c for c in cells if results[c] is not None]
  if not done:
    raise ConfigError(f'No finished cell of this spec in {workdir}/cells.')
  reporting.say(f'{len(done)} of {len(cells)} cells finished.')
  return _write_results(spec, done, results, workdir)


def _write_results(spec, cells: list[Cell], results: dict, workdir: str) -> list[dict]:
  rows = aggregate(spec, cells, results)
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
  return ', '.join(f'{k} {v["value"]:.4g}' for k, v in metrics.items() if v is not None)
