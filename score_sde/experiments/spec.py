"""Experiment specs: loading, validation and the plan of variants and cells.

python -m score_sde.experiments --spec=configs/experiments/sde_variants_toy.py \
        --workdir=runs/sde_variants_toy [--spec.base.training.n_iters=500 ...]

or from a notebook: ``rows = experiments.run(spec, workdir)`` (spec: a ConfigDict or a path);
``experiments.report(spec, workdir)`` (``--report_only``) tabulates the cells finished so far.

A spec (an ml_collections file, see ``configs/experiments/``) has:
  base          a complete, locked config (e.g. ``default_toy.get_config()``) every variant starts
                from, unless its bundle names its own ``'config'`` file
  train_axes    nested like the config, leaves are lists: ``{'training': {'sde': ['vpsde', 'vesde']}}``
                Their product gives the *variants*, each trained once (``training.train_and_evaluate``
                in ``<workdir>/models/<variant>``, hence itself resumable). A list item may be a
                *bundle* of settings that go together, ``{'name': 'rf', 'training.sde':
                'rectified_flow', 'model.parameterization': 'velocity'}``; the axis (any name,
                e.g. ``family``) then takes the value of its 'name'. Three bundle keys are no
                config keys: ``'config'``, a config file the variant starts from instead of
                ``base`` (any image or toy config: ``configs/vp/digits_ddpmpp_continuous.py``);
                ``'workdir'``, a finished training run to evaluate instead of training (its
                latest checkpoint); ``'checkpoint'``, one checkpoint of a run
                (``<workdir>/checkpoints/<step>``). Such a run must have been trained with the
                variant's config (checked against the config stored with the checkpoint)
  overrides     nested like the config, single values: set on every variant after its config
                (e.g. ``{'data': {'image_size': 8}}``), before the axes' settings
  samplers      {name: {sampling key: value or list of values, ..., 'nfe': optional own budgets}}:
                ``config.sampling`` settings; lists are axes of that sampler (e.g. ODE rtol)
  nfe           NFE budgets for fixed-step samplers (num_steps is derived from the method's NFE per step, ``sampling.METHODS``);
                adaptive ones (the ODE) run once per setting and report the NFE they used
  seeds         sampling seeds; with ``seed_scope='training'`` every seed also trains its own model
  metrics       2-D data: names in ``toy_metrics.METRICS``; images: names in
                ``scoring.METRICS`` (fid, kid, is, digits_fd, digits_confidence) and
                ``bpd`` (once per model: the probability-flow likelihood of the test split);
                ``metric_options`` their settings (``scorer.DEFAULT_OPTIONS``)
  num_samples   samples per cell
  batch_size    samples per round (default num_samples), split over every device of every
                host: each round is stored as it finishes, so a preempted cell resumes
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
import dataclasses
import importlib.util
import itertools
import json
import os
from typing import Any

import jax
import ml_collections

from score_sde import checkpointing, config_checks, datasets, models, sampling, sde_lib
from score_sde.datasets import toy
from score_sde.errors import ConfigError, ScoreSDEError
from score_sde.evaluation import scoring, toy_metrics
from score_sde.sampling import few_step

SPEC_FIELDS = ('base', 'train_axes', 'overrides', 'samplers', 'nfe', 'seeds', 'seed_scope',
               'metrics', 'metric_options', 'num_samples', 'batch_size', 'plot_columns')
BUNDLE_KEYS = ('config', 'workdir', 'checkpoint')   # bundle keys that are not config keys
MODEL_METRICS = ('bpd',)                             # once per model, not per sampler cell
SEED_SCOPES = ('sampling', 'training')


@dataclasses.dataclass(frozen=True)
class Variant:
  """One trained model: the train-axis values set on the base config."""
  name: str
  values: tuple[tuple[str, Any], ...]      # (config path, value) per train axis (+ seed)
  config: Any = dataclasses.field(compare=False, repr=False)
  run: str | None = None                   # an existing run's workdir to evaluate, not train
  step: int | None = None                  # its checkpoint (None: the latest)

  @property
  def is_image(self) -> bool:
    return self.config.data.get('image_size') is not None


@dataclasses.dataclass(frozen=True)
class Cell:
  """One sampler run of a trained model: its metrics are one file in ``<workdir>/cells``."""
  variant: Variant
  sampler: str                              # label, e.g. 'ode[rtol=0.001]'
  settings: tuple[tuple[str, Any], ...]     # config.sampling overrides (num_steps included)
  nfe_budget: int | None
  seed: int
  config: Any = dataclasses.field(compare=False, repr=False)
  skipped: str | None = None                # why the sampler does not fit the model: not run

  @property
  def name(self) -> str:
    nfe = 'adaptive' if self.nfe_budget is None else f'nfe{self.nfe_budget}'
    return _safe(f'{self.variant.name}__{self.sampler}__{nfe}__seed{self.seed}')

  def key(self, spec) -> dict:
    """What the cell's result depends on; a stored cell with another key is not reused."""
    return json.loads(json.dumps({
        'variant': self.variant.values, 'sampling': self.settings, 'nfe_budget': self.nfe_budget,
        'seed': self.seed, 'num_samples': spec.num_samples, 'batch_size': spec.batch_size,
        'metrics': list(spec.metrics), 'metric_options': spec.metric_options.to_dict(),
        'run': [self.variant.run, self.variant.step],
        'base': json.loads(self.variant.config.to_json_best_effort())}, default=str))


def model_key(variant: Variant, spec) -> dict:
  """What a model metric (bpd) of ``variant`` depends on."""
  return json.loads(json.dumps({
      'variant': variant.values, 'metrics': [m for m in spec.metrics if m in MODEL_METRICS],
      'run': [variant.run, variant.step],
      'base': json.loads(variant.config.to_json_best_effort())}, default=str))


def _safe(name: str) -> str:
  """A file name: 'sde=vpsde,data=spiral' -> 'sde-vpsde+data-spiral' (no '=' or ',', which
  shells and some tools treat specially)."""
  name = name.replace('=', '-').replace(',', '+')
  return ''.join(c if c.isalnum() or c in '-_.[]+' else '_' for c in name)


def load_config_file(path: str, what: str = 'Spec'):
  """``get_config()`` of the Python file at ``path`` (relative: to the working directory, else
  to the repository root, where ``configs/`` lives)."""
  path = os.fspath(path)
  if not os.path.exists(path) and not os.path.isabs(path) and os.path.exists(
      os.path.join(_ROOT, path)):
    path = os.path.join(_ROOT, path)
  if not os.path.exists(path):
    raise ConfigError(f'{what} file {path!r} does not exist.')
  module_spec = importlib.util.spec_from_file_location('_experiment_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config()


_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_spec(spec) -> ml_collections.ConfigDict:
  """A spec ConfigDict from itself or from the path of a file defining ``get_config()``."""
  if isinstance(spec, (str, os.PathLike)):
    spec = load_config_file(spec)
  unknown = [k for k in spec.keys() if k not in SPEC_FIELDS]
  if unknown:
    raise ConfigError(f'Unknown spec field {unknown[0]!r}; valid: {list(SPEC_FIELDS)}.')
  missing = [k for k in ('samplers', 'nfe', 'seeds', 'metrics', 'num_samples') if k not in spec]
  if missing:
    raise ConfigError(f'The spec has no {missing[0]!r} field (required: samplers, nfe, seeds, '
                      'metrics, num_samples; base unless every variant names its config).')
  with spec.unlocked():
    spec.base = spec.get('base')
    spec.batch_size = spec.get('batch_size') or spec.num_samples
    spec.overrides = spec.get('overrides') or ml_collections.ConfigDict()
    spec.train_axes = spec.get('train_axes') or ml_collections.ConfigDict()
    spec.metric_options = spec.get('metric_options') or ml_collections.ConfigDict()
    spec.seed_scope = spec.get('seed_scope') or 'sampling'
    spec.plot_columns = spec.get('plot_columns') or 'training.sde'
  return spec


def leaves(tree, prefix: str = '') -> list[tuple[str, Any]]:
  """('a.b', leaf) pairs of a nested ConfigDict / dict, in sorted key order."""
  out = []
  for k in sorted(tree.keys()):
    v = tree[k]
    path = f'{prefix}{k}'
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      out.extend(leaves(v, path + '.'))
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
  if spec.seed_scope not in SEED_SCOPES:
    raise ConfigError(f'Unknown seed_scope {spec.seed_scope!r}; valid: {list(SEED_SCOPES)}.')
  if not spec.seeds:
    raise ConfigError('spec.seeds is empty: give at least one seed.')
  _check_budgets('spec.nfe', spec.nfe)
  axes = [(path, _as_list(values)) for path, values in leaves(spec.train_axes)]
  empty = [path for path, values in axes if not values]
  if empty:
    raise ConfigError(f'Train axis {empty[0]} is empty: give at least one value.')
  variants = []
  seeds_of_variant = list(spec.seeds) if spec.seed_scope == 'training' else [None]
  for combo in itertools.product(*[[(p, v) for v in vs] for p, vs in axes]):
    for seed in seeds_of_variant:
      values = (tuple((p, _bundle(p, v)[0]) for p, v in combo)
                + ((('seed', seed),) if seed is not None else ()))
      name = _safe(','.join(f'{p.split(".")[-1]}={v}' for p, v in values) or 'base')
      special = {k: v for p, value in combo for k, v in _bundle(p, value)[2].items()}
      config = _variant_config(spec, special, name)
      for path, value in tuple(combo) + values[len(combo):]:
        for setting, setting_value in _bundle(path, value)[1]:
          set_path(config, setting, setting_value)
      _check_variant(config, name, spec)
      run, step = _existing_run(special, config, name)
      variants.append(Variant(name, values, config, run, step))
  cells, checked = [], set()
  for variant in variants:
    for sampler_name in sorted(spec.samplers.keys()):
      cells.extend(_sampler_cells(spec, variant, sampler_name, checked))
  return variants, cells


def _check_budgets(where: str, budgets) -> None:
  """ConfigError unless ``budgets`` is a non-empty list of positive integers."""
  budgets = _as_list(budgets)
  if not budgets:
    raise ConfigError(f'{where} is empty: give at least one NFE budget.')
  for budget in budgets:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
      raise ConfigError(f'{where}: {budget!r} is not an NFE budget (a positive integer).')


def _bundle(path: str, value) -> tuple[Any, list[tuple[str, Any]], dict[str, Any]]:
  """(the value a variant is named and tabulated by, its [(config path, value)] settings, its
  ``BUNDLE_KEYS``): a dict is a bundle named by its 'name', anything else sets ``path``."""
  if not isinstance(value, (dict, ml_collections.ConfigDict)):
    return value, [(path, value)], {}
  if 'name' not in value:
    raise ConfigError(f'A bundle on train axis {path!r} needs a \'name\', got keys {sorted(value)}.')
  return (value['name'], [(k, v) for k, v in value.items() if k not in ('name',) + BUNDLE_KEYS],
          {k: v for k, v in value.items() if k in BUNDLE_KEYS})


def _variant_config(spec, special: dict, name: str):
  """The variant's starting config (its bundle's 'config' file, else ``spec.base``) with
  ``spec.overrides`` set."""
  if special.get('config'):
    config = load_config_file(special['config'], f'Variant {name}: config')
  elif spec.base is not None:
    config = _copy(spec.base)
  else:
    raise ConfigError(f'Variant {name} has no config: set spec.base or a \'config\' file in its '
                      'bundle.')
  for path, value in leaves(spec.overrides):
    set_path(config, path, value)
  return config


def _existing_run(special: dict, config, name: str) -> tuple[str | None, int | None]:
  """(workdir, step) of the run a variant evaluates instead of training, checked: it has the
  checkpoint, and that checkpoint was trained with ``config`` (``ConfigError`` otherwise)."""
  workdir, step = special.get('workdir'), None
  if special.get('checkpoint'):
    path = os.path.normpath(special['checkpoint'])
    if not os.path.basename(path).isdigit():
      raise ConfigError(f'Variant {name}: checkpoint {special["checkpoint"]!r} is not a '
                        '<workdir>/checkpoints/<step> directory.')
    workdir, step = os.path.dirname(os.path.dirname(path)), int(os.path.basename(path))
  if not workdir:
    return None, None
  directory = checkpointing.checkpoint_dir(workdir)
  steps = []
  if os.path.isdir(directory):
    ckpt = checkpointing.Checkpointer(directory, read_only=True)
    try:
      steps = ckpt.all_steps()
      if step is None and steps:
        step = max(steps)
      if step in steps:
        ckpt.check_config(config, step)
    except ConfigError as e:
      raise ConfigError(f'Variant {name}: {e}') from e
    finally:
      ckpt.close()
  if step is None or step not in steps:
    what = f'no checkpoint {step}' if step is not None else 'no checkpoint'
    raise ConfigError(f'Variant {name}: {what} in {directory} (steps there: {steps}).')
  return workdir, step


def _check_variant(config, name: str, spec) -> None:
  try:
    sde_lib.get_sde(config)
    models.get_model(config)
  except ScoreSDEError:
    raise
  except ValueError as e:
    raise ConfigError(f'Variant {name}: {e}') from e
  _check_metrics(config, name, spec.metrics)
  n_dev = jax.device_count()
  if spec.num_samples < 2:
    raise ConfigError(f'spec.num_samples={spec.num_samples} must be >= 2.')
  if spec.batch_size % n_dev:
    what = 'spec.batch_size' if spec.batch_size != spec.num_samples else 'spec.num_samples'
    raise ConfigError(f'{what}={spec.batch_size} (samples per round) must be divisible by the '
                      f'{n_dev} devices of all hosts.')


def _check_metrics(config, name: str, names) -> None:
  """Image metrics on images, toy metrics on 2-D toy data: else a ``ConfigError``."""
  if config.data.get('image_size') is not None:
    sample_metrics = [m for m in names if m not in MODEL_METRICS]
    scoring.check(sample_metrics, config.data.dataset,
                        f'Variant {name} (images, data.dataset {config.data.dataset!r})')
    return
  if config.data.dataset not in toy.TOY_DISTRIBUTIONS:
    raise ConfigError(f'Variant {name}: data.dataset {config.data.dataset!r} has no '
                      'data.image_size and is no 2-D toy distribution '
                      f'{sorted(toy.TOY_DISTRIBUTIONS)}.')
  wrong = [m for m in names if m in scoring.METRICS or m in MODEL_METRICS]
  if wrong:
    raise ConfigError(f'Variant {name}: {wrong[0]!r} is an image metric and data.dataset '
                      f'{config.data.dataset!r} is 2-D toy data; toy metrics: '
                      f'{sorted(toy_metrics.METRICS)}.')
  toy_metrics.check_metric_names(names)


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
  _check_budgets(f'Sampler {sampler_name!r}: nfe', budgets)
  name = entry.get('method', variant.config.sampling.method)
  if name not in sampling.METHODS:
    raise ConfigError(f'Sampler {sampler_name!r}: unknown sampling method {name!r}; valid: '
                      f'{sorted(sampling.METHODS)}.')
  method = sampling.METHODS[name]
  setting_axes = [[(k, v) for v in _as_list(values)] for k, values in sorted(entry.items())]
  sde = sde_lib.get_sde(variant.config)
  shape = (spec.batch_size // jax.device_count(),) + datasets.sample_shape(variant.config)
  cells = []
  for combo in itertools.product(*setting_axes):
    varying = [(k, v) for (k, v), axis in zip(combo, setting_axes) if len(axis) > 1]
    label = sampler_name + (f'[{",".join(f"{k}={v}" for k, v in varying)}]' if varying else '')
    for budget in (budgets if method.nfe_per_step is not None else [None]):
      config = _copy(variant.config)
      config.sampling.batch_size = spec.batch_size
      settings = list(combo)
      for k, v in settings:
        set_path(config, f'sampling.{k}', v)
      config_checks.check_sampling_overrides(config, [f'sampling.{k}' for k, _ in settings],
                                             prefix=f'Sampler {sampler_name!r}: ')
      if budget is not None:
        num_steps = method.steps_for_nfe(config.sampling, int(budget))
        if num_steps < 1:
          raise ConfigError(f'Sampler {sampler_name!r}: NFE budget {budget} is below one step.')
        settings.append(('num_steps', num_steps))
        set_path(config, 'sampling.num_steps', num_steps)
      skipped = few_step.mismatch(config.training.get('objective'), config.sampling.method)
      if skipped is None and budget in (None, min(budgets)):   # fewest steps: limits bite there
        _check_sampler(config, sde, shape, f'Sampler {sampler_name!r} (variant {variant.name}, '
                       f'NFE {budget})', checked)
      for seed in spec.seeds:
        if spec.seed_scope == 'training' and dict(variant.values)['seed'] != seed:
          continue
        cells.append(Cell(variant, label, tuple(settings), budget, int(seed), config, skipped))
  return cells
