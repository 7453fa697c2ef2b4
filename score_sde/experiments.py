"""Comparing variants side by side: a spec -> trained models -> sampler cells -> tables + plots.

    python -m score_sde.experiments --spec=configs/experiments/sde_variants_toy.py \
        --workdir=runs/sde_variants_toy [--spec.base.training.n_iters=500 ...]

or from a notebook: ``rows = experiments.run(spec, workdir)`` (spec: a ConfigDict or a path);
``experiments.report(spec, workdir)`` (``--report_only``) tabulates the cells finished so far.

A spec (an ml_collections file, see ``configs/experiments/``) has:
  base          a complete, locked config (e.g. ``default_toy.get_config()``) every variant starts from
  train_axes    nested like the config, leaves are lists: ``{'training': {'sde': ['vpsde', 'vesde']}}``
                Their product gives the *variants*, each trained once (``training.train_and_evaluate``
                in ``<workdir>/models/<variant>``, hence itself resumable). A list item may be a
                *bundle* of settings that go together, ``{'name': 'rf', 'training.sde':
                'rectified_flow', 'model.parameterization': 'velocity'}``; the axis (any name,
                e.g. ``family``) then takes the value of its 'name'
  samplers      {name: {sampling key: value or list of values, ..., 'nfe': optional own budgets}}:
                ``config.sampling`` settings; lists are axes of that sampler (e.g. ODE rtol)
  nfe           NFE budgets for fixed-step samplers (num_steps is derived: ``STEPS_FOR_NFE``);
                adaptive ones (the ODE) run once per setting and report the NFE they used
  seeds         sampling seeds; with ``seed_scope='training'`` every seed also trains its own model
  metrics       names in ``toy_metrics.METRICS`` (2-D data), ``metric_options`` their settings
  num_samples   samples per cell (divisible by the number of local devices)
A *cell* is (variant, sampler setting, NFE budget, seed). Each finished cell is written at once to
``<workdir>/cells/<cell>.json`` (temporary file, then rename), so an interrupted comparison resumes
where it stopped without redoing finished cells. Results: ``results.md`` / ``results.csv`` (one
row per variant x sampler x NFE: metrics as mean +- standard error over seeds, NFE, wall times)
and ``plots/metric_vs_nfe.png``, ``plots/samples.png``.

Everything is validated before any work: an unknown config key or value, sampler, metric or
spec field raises ``ConfigError`` naming it and the valid choices.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import ml_collections
import numpy as np

from score_sde import (checkpointing, config_checks, generation, models, parallel, plotting,
                       sampling, sde_lib)
from score_sde.datasets import toy
from score_sde.errors import ConfigError, ScoreSDEError
from score_sde.evaluation import toy_metrics
from score_sde.sampling import correctors, predictors

SPEC_FIELDS = ('base', 'train_axes', 'samplers', 'nfe', 'seeds', 'seed_scope', 'metrics',
               'metric_options', 'num_samples', 'plot_columns')
SEED_SCOPES = ('sampling', 'training')


def _pc_steps(cfg, nfe):
  # An unknown predictor name counts 1 here; building the sampler then names it.
  per_step = (predictors.PREDICTOR_NFE.get(cfg.predictor, 1)
              + correctors.corrector_nfe(cfg.corrector, cfg.n_steps_each))
  return nfe // max(per_step, 1)


# method -> num_steps(sampling config, NFE budget), or None: adaptive, its NFE is measured.
STEPS_FOR_NFE: dict[str, Callable | None] = {
    'pc': _pc_steps,
    'dpm_solver': lambda cfg, nfe: nfe,
    'ddim': lambda cfg, nfe: nfe,
    'heun': lambda cfg, nfe: (nfe + 1) // 2,      # 2 num_steps - 1 evaluations
    'ode': None,
}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One trained model: the train-axis values set on the base config."""
  name: str
  values: tuple[tuple[str, Any], ...]      # (config path, value) per train axis (+ seed)
  config: Any = dataclasses.field(compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One sampler run of a trained model: its metrics are one file in ``<workdir>/cells``."""
  variant: Variant
  sampler: str                              # label, e.g. 'ode[rtol=0.001]'
  settings: tuple[tuple[str, Any], ...]     # config.sampling overrides (num_steps included)
  nfe_budget: int | None
  seed: int
  config: Any = dataclasses.field(compare=False, repr=False)

  @property
  def name(self) -> str:
    nfe = 'adaptive' if self.nfe_budget is None else f'nfe{self.nfe_budget}'
    return _safe(f'{self.variant.name}__{self.sampler}__{nfe}__seed{self.seed}')

  def key(self, spec) -> dict:
    """What the cell's result depends on; a stored cell with another key is not reused."""
    return json.loads(json.dumps({
        'variant': self.variant.values, 'sampling': self.settings, 'nfe_budget': self.nfe_budget,
        'seed': self.seed, 'num_samples': spec.num_samples, 'metrics': list(spec.metrics),
        'metric_options': spec.metric_options.to_dict(),
        'base': json.loads(spec.base.to_json_best_effort())}, default=str))


def _safe(name: str) -> str:
  return ''.join(c if c.isalnum() or c in '-_.=,[]+' else '_' for c in name)


# ------------------------------------------------------------------------------------------------
# The spec: loading and validation
# ------------------------------------------------------------------------------------------------

def load_spec(spec) -> ml_collections.ConfigDict:
  """A spec ConfigDict from itself or from the path of a file defining ``get_config()``."""
  if isinstance(spec, (str, os.PathLike)):
    path = os.fspath(spec)
    if not os.path.exists(path):
      raise ConfigError(f'Spec file {path!r} does not exist.')
    module_spec = importlib.util.spec_from_file_location('_experiment_spec', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    spec = module.get_config()
  unknown = [k for k in spec.keys() if k not in SPEC_FIELDS]
  if unknown:
    raise ConfigError(f'Unknown spec field {unknown[0]!r}; valid: {list(SPEC_FIELDS)}.')
  missing = [k for k in ('base', 'samplers', 'nfe', 'seeds', 'metrics', 'num_samples')
             if k not in spec]
  if missing:
    raise ConfigError(f'The spec has no {missing[0]!r} field (required: base, samplers, nfe, '
                      'seeds, metrics, num_samples).')
  with spec.unlocked():
    spec.train_axes = spec.get('train_axes') or ml_collections.ConfigDict()
    spec.metric_options = spec.get('metric_options') or ml_collections.ConfigDict()
    spec.seed_scope = spec.get('seed_scope') or 'sampling'
    spec.plot_columns = spec.get('plot_columns') or 'training.sde'
  return spec


def _leaves(tree, prefix: str = '') -> list[tuple[str, Any]]:
  """('a.b', leaf) pairs of a nested ConfigDict / dict, in sorted key order."""
  out = []
  for k in sorted(tree.keys()):
    v = tree[k]
    path = f'{prefix}{k}'
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out.extend(_leaves(v, path + '.'))
    else:
      out.append((path, v))
  return out


def set_path(config, path: str, value) -> None:
  """config.<path> = value; an unknown key or a wrongly typed value is a ``ConfigError``."""
  *parents, key = path.split('.')
  node = config
  for i, part in enumerate(parents + [key]):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = '.'.join((parents + [key])[:i]) or 'the config'
      valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise ConfigError(f'Unknown config key {path!r}: {where} has no {part!r}; valid: {valid}.')
    if i < len(parents):
      node = node[part]
  try:
    node[key] = value
  except (TypeError, ValueError) as e:
    raise ConfigError(f'Bad value {value!r} for config key {path!r}: {e}') from e


def _copy(config):
  return copy.deepcopy(config)    # keeps the lock and the typed placeholders


def _as_list(value) -> list:
  return list(value) if isinstance(value, (list, tuple)) else [value]


def plan(spec) -> tuple[list[Variant], list[Cell]]:
  """All variants and cells of ``spec``, each built and checked (nothing is trained or run)."""
  spec = load_spec(spec)
  toy_metrics.check_metric_names(spec.metrics)
  if spec.seed_scope not in SEED_SCOPES:
    raise ConfigError(f'Unknown seed_scope {spec.seed_scope!r}; valid: {list(SEED_SCOPES)}.')
  if not spec.seeds:
    raise ConfigError('spec.seeds is empty: give at least one seed.')
  axes = [(path, _as_list(values)) for path, values in _leaves(spec.train_axes)]
  variants = []
  seeds_of_variant = list(spec.seeds) if spec.seed_scope == 'training' else [None]
  for combo in itertools.product(*[[(p, v) for v in vs] for p, vs in axes]):
    for seed in seeds_of_variant:
      values = (tuple((p, _bundle(p, v)[0]) for p, v in combo)
                + ((('seed', seed),) if seed is not None else ()))
      config = _copy(spec.base)
      for path, value in tuple(combo) + values[len(combo):]:
        for setting, setting_value in _bundle(path, value)[1]:
          set_path(config, setting, setting_value)
      name = _safe(','.join(f'{p.split(".")[-1]}={v}' for p, v in values) or 'base')
      _check_variant(config, name, spec)
      variants.append(Variant(name, values, config))
  cells, checked = [], set()
  for variant in variants:
    for sampler_name in sorted(spec.samplers.keys()):
      cells.extend(_sampler_cells(spec, variant, sampler_name, checked))
  return variants, cells


def _bundle(path: str, value) -> tuple[Any, list[tuple[str, Any]]]:
  """(the value a variant is named and tabulated by, its [(config path, value)] settings): a
  dict is a bundle named by its 'name', anything else sets ``path`` itself."""
  if not isinstance(value, (dict, ml_collections.ConfigDict)):
    return value, [(path, value)]
  if 'name' not in value:
    raise ConfigError(f'A bundle on train axis {path!r} needs a \'name\', got keys {sorted(value)}.')
  return value['name'], [(k, v) for k, v in value.items() if k != 'name']


def _check_variant(config, name: str, spec) -> None:
  try:
    sde_lib.get_sde(config)
    models.get_model(config)
  except ScoreSDEError:
    raise
  except ValueError as e:
    raise ConfigError(f'Variant {name}: {e}') from e
  if config.data.get('image_size') is not None or config.data.dataset not in toy.TOY_DISTRIBUTIONS:
    raise ConfigError(
        f'Variant {name}: data.dataset {config.data.dataset!r} is not 2-D toy data; experiments '
        f'compute the toy metrics {sorted(toy_metrics.METRICS)} on {sorted(toy.TOY_DISTRIBUTIONS)}.')
  n_dev = jax.local_device_count()
  if spec.num_samples < 2 or spec.num_samples % n_dev:
    raise ConfigError(f'spec.num_samples={spec.num_samples} must be >= 2 and divisible by the '
                      f'{n_dev} local devices.')


def _check_sampler(config, sde, shape, where: str, checked: set) -> None:
  """Builds (does not compile) the sampler, which checks every name and setting; once per
  distinct model, SDE and sampler settings (building a schedule runs eager JAX ops)."""
  key = json.dumps([config.training.sde, config.model.to_dict(), config.sampling.to_dict()],
                   sort_keys=True, default=str)
  if key in checked:
    return
  try:
    sampling.get_sampler(config, sde, shape)
  except ScoreSDEError:
    raise
  except ValueError as e:
    raise ConfigError(f'{where}: {e}') from e
  checked.add(key)


def _sampler_cells(spec, variant: Variant, sampler_name: str, checked: set) -> list[Cell]:
  entry = dict(spec.samplers[sampler_name].to_dict())
  budgets = _as_list(entry.pop('nfe', list(spec.nfe)))
  method = entry.get('method', variant.config.sampling.method)
  if method not in STEPS_FOR_NFE:
    raise ConfigError(f'Sampler {sampler_name!r}: unknown sampling method {method!r}; valid: '
                      f'{sorted(STEPS_FOR_NFE)}.')
  setting_axes = [[(k, v) for v in _as_list(values)] for k, values in sorted(entry.items())]
  sde = sde_lib.get_sde(variant.config)
  shape = (spec.num_samples // jax.local_device_count(),) + generation.sample_shape(variant.config)
  cells = []
  for combo in itertools.product(*setting_axes):
    varying = [(k, v) for (k, v), axis in zip(combo, setting_axes) if len(axis) > 1]
    label = sampler_name + (f'[{",".join(f"{k}={v}" for k, v in varying)}]' if varying else '')
    for budget in (budgets if STEPS_FOR_NFE[method] is not None else [None]):
      config = _copy(variant.config)
      config.sampling.batch_size = spec.num_samples
      settings = list(combo)
      for k, v in settings:
        set_path(config, f'sampling.{k}', v)
      config_checks.check_sampling_overrides(config, [f'sampling.{k}' for k, _ in settings],
                                             prefix=f'Sampler {sampler_name!r}: ')
      if budget is not None:
        num_steps = STEPS_FOR_NFE[method](config.sampling, int(budget))
        if num_steps < 1:
          raise ConfigError(f'Sampler {sampler_name!r}: NFE budget {budget} is below one step.')
        settings.append(('num_steps', num_steps))
        set_path(config, 'sampling.num_steps', num_steps)
      if budget in (None, min(budgets)):   # the fewest steps: where step-count limits bite
        _check_sampler(config, sde, shape, f'Sampler {sampler_name!r} (variant {variant.name}, '
                       f'NFE {budget})', checked)
      for seed in spec.seeds:
        if spec.seed_scope == 'training' and dict(variant.values)['seed'] != seed:
          continue
        cells.append(Cell(variant, label, tuple(settings), budget, int(seed), config))
  return cells


# ------------------------------------------------------------------------------------------------
# Running: train each variant once, then every cell; each result stored as it finishes
# ------------------------------------------------------------------------------------------------

def _write_json(path: str, obj) -> None:
  """Atomically: a reader (or a resumed run) sees the old file or the whole new one."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1, default=str)
  os.replace(tmp, path)


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
  from score_sde import training   # TensorBoard and optax only when a model is needed
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
    _write_json(done_path, {'train_seconds': seconds, 'steps': int(state.step)})
  return state.ema_params, seconds


class _SamplerCache:
  """One compiled pmapped sampler per (model, SDE, sampler settings), shared by the variants
  (e.g. datasets, seeds) that differ only in their parameters."""

  def __init__(self, devices):
    self._devices = devices
    self._compiled: dict[str, Any] = {}

  def __call__(self, config, p_params, rng):
    """(compiled fn(p_params, rng) -> (samples, nfe), seconds spent compiling now)."""
    key = json.dumps([config.training.sde, config.training.continuous, config.model.to_dict(),
                      config.sampling.to_dict(), list(generation.sample_shape(config))],
                     sort_keys=True, default=str)
    if key in self._compiled:
      return self._compiled[key], 0.0
    t0 = time.time()
    sde, model = sde_lib.get_sde(config), models.get_model(config)
    per_device = parallel.per_device_batch_size(config.sampling.batch_size, len(self._devices))
    fn = generation.get_sample_fn(config, sde, model, per_device, self._devices)
    self._compiled[key] = compiled = fn.lower(p_params, rng).compile()
    return compiled, time.time() - t0


def _run_cell(cell: Cell, spec, p_params, cache: _SamplerCache) -> tuple[dict, np.ndarray]:
  config = cell.config
  rng = jax.random.PRNGKey(cell.seed)
  fn, compile_seconds = cache(config, p_params, rng)
  t0 = time.time()
  samples, nfe = fn(p_params, rng)
  samples = parallel.unshard(parallel.to_host(samples))
  sample_seconds = time.time() - t0
  data = toy_metrics.reference_data(config.data.dataset, spec.num_samples, cell.seed)
  metrics = toy_metrics.compute(list(spec.metrics), samples, data, config.data.dataset,
                                jax.random.fold_in(rng, 1), spec.metric_options.to_dict())
  return {'cell': cell.name, 'variant': cell.variant.name, 'sampler': cell.sampler,
          'nfe_budget': cell.nfe_budget, 'seed': cell.seed,
          'nfe': int(np.asarray(nfe).reshape(-1)[0]), 'metrics': metrics,
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
  _write_json(os.path.join(workdir, 'spec.json'), json.loads(spec.to_json_best_effort()))
  cell_dir = os.path.join(workdir, 'cells')
  os.makedirs(cell_dir, exist_ok=True)
  results = {c: _read_cell(os.path.join(cell_dir, c.name + '.json'), c.key(spec)) for c in cells}
  todo = [c for c in cells if results[c] is None]
  _say(f'{len(variants)} variants, {len(cells)} cells: {len(cells) - len(todo)} done, '
       f'{len(todo)} to run; results in {workdir}')
  cache, clock = _SamplerCache(devices), _Eta(len(todo), len({c.variant for c in todo}))
  for variant in variants:
    mine = [c for c in todo if c.variant == variant]
    if not mine:
      continue
    t0 = time.time()
    params, train_seconds = _train(variant, workdir, devices)
    p_params = parallel.replicate(params, devices)
    clock.trained(time.time() - t0)
    for cell in mine:
      t0 = time.time()
      result, samples = _run_cell(cell, spec, p_params, cache)
      result.update(key=cell.key(spec), train_seconds=train_seconds)
      if cell.seed == spec.seeds[0]:   # pictures use the first seed's samples
        np.save(os.path.join(cell_dir, cell.name + '.npy'), samples)
      _write_json(os.path.join(cell_dir, cell.name + '.json'), result)
      results[cell] = result
      clock.cell_done(time.time() - t0)
      _say(f'[{len(cells) - clock.cells_left}/{len(cells)}] {cell.name}: NFE {result["nfe"]}, '
           f'{_metric_summary(result["metrics"])}  ETA {_format_eta(clock.eta())}')
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
  _say(f'{len(done)} of {len(cells)} cells finished.')
  return _write_results(spec, done, results, workdir)


def _write_results(spec, cells: list[Cell], results: dict, workdir: str) -> list[dict]:
  rows = aggregate(spec, cells, results)
  paths = write_tables(rows, spec, workdir) + write_plots(rows, spec, cells, workdir)
  _say('Wrote ' + ', '.join(paths))
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


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def _format_eta(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  return f'{m}m{s:02d}s'


def _metric_summary(metrics: dict) -> str:
  return ', '.join(f'{k} {v["value"]:.4g}' for k, v in metrics.items() if v is not None)


# ------------------------------------------------------------------------------------------------
# Tables and plots
# ------------------------------------------------------------------------------------------------

def _mean_se(values: list[float], own_se: list[float | None]) -> tuple[float, float | None]:
  """Mean over seeds with its standard error; for one seed, the metric's own standard error."""
  values = np.asarray(values, np.float64)
  if len(values) > 1:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
  return float(values[0]), own_se[0]


def aggregate(spec, cells: list[Cell], results: dict) -> list[dict]:
  """One row per (variant without its seed, sampler, NFE budget), in the plan's order."""
  groups: dict[tuple, list[dict]] = {}
  axis_values: dict[tuple, dict] = {}
  for cell in cells:
    values = tuple((p, v) for p, v in cell.variant.values if p != 'seed')
    key = (values, cell.sampler, cell.nfe_budget)
    groups.setdefault(key, []).append(results[cell])
    axis_values[key] = dict(values)
  rows = []
  for key, rs in groups.items():
    row = {**{p.split('.')[-1]: v for p, v in axis_values[key].items()}, 'sampler': key[1],
           'nfe_budget': key[2], 'nfe': float(np.mean([r['nfe'] for r in rs])), 'seeds': len(rs)}
    for name in spec.metrics:
      own = [r['metrics'][name] for r in rs]
      if any(m is None for m in own):
        row[name], row[name + '_se'] = None, None
      else:
        row[name], row[name + '_se'] = _mean_se([m['value'] for m in own],
                                                [m['std_err'] for m in own])
    row['sample_seconds'] = float(np.mean([r['sample_seconds'] for r in rs]))
    row['train_seconds'] = float(np.mean([r['train_seconds'] for r in rs]))
    rows.append(row)
  return rows


def _fmt(value, se=None) -> str:
  if value is None:
    return '—'
  text = f'{value:.4g}'
  return text if se is None or not np.isfinite(se) else f'{text} ± {se:.2g}'


def write_tables(rows: list[dict], spec, workdir: str) -> list[str]:
  """``results.csv`` (every number) and ``results.md`` (mean ± s.e. per metric)."""
  csv_path, md_path = os.path.join(workdir, 'results.csv'), os.path.join(workdir, 'results.md')
  fields = list(rows[0].keys())
  with open(csv_path + '.tmp', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(csv_path + '.tmp', csv_path)
  axes = [k for k in fields if k not in ('sampler', 'nfe_budget', 'nfe', 'seeds', 'sample_seconds',
                                         'train_seconds') and not k.endswith('_se')
          and k not in spec.metrics]
  header = axes + ['sampler', 'NFE'] + list(spec.metrics) + ['sample s', 'train s']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for r in rows:
    cells = [str(r[a]) for a in axes] + [r['sampler'], f'{r["nfe"]:.0f}']
    cells += [_fmt(r[m], r[m + '_se']) for m in spec.metrics]
    cells += [f'{r["sample_seconds"]:.2f}', f'{r["train_seconds"]:.0f}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  seeds = rows[0]['seeds']
  note = (f'Mean ± standard error over {seeds} {spec.seed_scope} seeds' if seeds > 1 else
          "One seed; ± is the metric's own standard error")
  note += (f'; {spec.num_samples} samples per cell. Metrics: {", ".join(spec.metrics)} '
           f'(options {spec.metric_options.to_dict()}); sample s: sampling wall time without '
           'compilation; train s: training wall time of the model.')
  with open(md_path + '.tmp', 'w') as f:
    f.write('\n'.join(lines) + '\n\n' + note + '\n')
  os.replace(md_path + '.tmp', md_path)
  return [md_path, csv_path]


def write_plots(rows: list[dict], spec, cells: list[Cell], workdir: str) -> list[str]:
  """Metric vs NFE (columns: values of ``spec.plot_columns``; rows: other variant axes x metric;
  one line per sampler) and the first seed's samples side by side (rows: variants; columns:
  samplers at their largest NFE)."""
  col_key = spec.plot_columns.split('.')[-1]
  axes = [p.split('.')[-1] for p, _ in _leaves(spec.train_axes)]
  row_keys = [k for k in axes if k != col_key]
  cols = list(dict.fromkeys(r.get(col_key) for r in rows))
  groups = list(dict.fromkeys(tuple(r[k] for k in row_keys) for r in rows))
  panels = []
  for group in groups:
    for metric in spec.metrics:
      mine = [r for r in rows if tuple(r[k] for k in row_keys) == group and r[metric] is not None]
      if not mine:
        continue
      line_row = []
      for col in cols:
        lines = {}
        for r in (r for r in mine if r.get(col_key) == col):
          # One line per sampler: settings axes (e.g. the ODE's rtol) are points along it.
          xs = lines.setdefault(r['sampler'].split('[')[0], ([], [], []))
          xs[0].append(r['nfe'])
          xs[1].append(r[metric])
          xs[2].append(r[metric + '_se'] or 0.0)
        title = ', '.join(str(g) for g in group + ((col,) if col is not None else ()))
        line_row.append({'title': title, 'ylabel': metric, 'lines': lines})
      panels.append(line_row)
  plot_dir = os.path.join(workdir, 'plots')
  paths = [plotting.metric_vs_nfe(panels, os.path.join(plot_dir, 'metric_vs_nfe.png'))]
  picture_rows, row_labels = [], []
  seed = spec.seeds[0]
  for variant in dict.fromkeys(c.variant for c in cells if c.seed == seed):
    best: dict[str, Cell] = {}
    for c in cells:
      if c.variant == variant and c.seed == seed:
        if c.sampler not in best or (c.nfe_budget or 0) >= (best[c.sampler].nfe_budget or 0):
          best[c.sampler] = c
    row = []
    for c in best.values():
      path = os.path.join(workdir, 'cells', c.name + '.npy')
      if os.path.exists(path):
        row.append((f'{c.sampler}, NFE {c.nfe_budget or "adaptive"}', np.load(path),
                    toy_metrics.reference_data(c.config.data.dataset, 2000, seed)))
    picture_rows.append(row)
    row_labels.append(', '.join(str(v) for p, v in variant.values if p != 'seed'))
  paths.append(plotting.scatter_panels(picture_rows, os.path.join(plot_dir, 'samples.png'),
                                       row_labels))
  return paths


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def main(argv):
  del argv
  from absl import flags
  flags_ = flags.FLAGS
  (report if flags_.report_only else run)(flags_.spec, flags_.workdir)


if __name__ == '__main__':
  from absl import flags
  from ml_collections import config_flags

  from score_sde import cli
  config_flags.DEFINE_config_file('spec', None, 'Experiment spec file (configs/experiments/).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for models, cells, tables and plots.')
  flags.DEFINE_bool('report_only', False, 'Only tabulate and plot the cells finished so far.')
  flags.mark_flags_as_required(['spec', 'workdir'])
  cli.run(main)
