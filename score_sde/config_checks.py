"""Config validation before anything is compiled, restored or written.

``check(config, mode)`` looks at the whole config at once and raises ``errors.ConfigError`` with
one short message for the first problem: the key, its value and, where there is a set, the valid
choices. It checks

- no value is NaN; sizes and frequencies are positive (batch sizes, ``n_iters``, log / eval /
  snapshot frequencies, ...), rates and tolerances in range; the guidance interval is not empty;
- every name is known: SDE, model, ``model.precond`` (for that model), dataset, optimizer,
  sampling method, predictor, corrector, time schedule, Hutchinson type;
- batch sizes divide over the devices;
- latent diffusion settings hang together (``datasets.latents.check_config``): latents with an
  autoencoder and a latent shape, centred, no bits/dim;
- the SDE, model, optimizer and sampler build from the config: their factories' own checks run
  here, before a checkpoint is restored.

``mode`` is what the config is about to do: ``'train'`` (the training loop, with its eval loss
and snapshot sampling), ``'sample'`` (``sample.py``), ``'eval'`` (the evaluation loop) or
``'train_classifier'`` (the guidance classifier: ``classifier.*`` and labelled data).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from score_sde import errors

MODES = ('train', 'sample', 'eval', 'train_classifier')

POSITIVE = ('training.batch_size', 'training.n_iters', 'training.log_freq', 'training.eval_freq',
            'training.snapshot_freq', 'training.snapshot_freq_for_preemption',
            'training.posthoc_ema_snapshot_freq', 'sampling.batch_size', 'sampling.n_steps_each', 'sampling.rtol', 'sampling.atol',
            'sampling.eps', 'eval.batch_size', 'eval.likelihood_eps', 'eval.likelihood_rtol',
            'eval.likelihood_atol', 'eval.num_repeats', 'model.nf', 'model.num_scales', 'optim.lr')
NON_NEGATIVE = ('optim.warmup', 'optim.weight_decay')   # grad_clip <= 0: no clipping
UNIT_INTERVAL = ('model.ema_rate', 'model.dropout', 'training.label_dropout')
CLASSIFIER_POSITIVE = ('classifier.n_iters', 'classifier.batch_size', 'classifier.lr',
                       'classifier.log_freq', 'classifier.snapshot_freq')

# Models whose noise conditioning the EDM wrapper (models/precond.py) cannot drive: NCSNv2's
# sigma division is the paper's parameterisation only.
PAPER_PRECOND_ONLY = ('ncsnv2_64', 'ncsnv2_128', 'ncsnv2_256')


def _get(config, key: str, default=None):
  node = config
  for part in key.split('.'):
    if part not in node:
      return default
    node = node[part]
  return node


def _choices() -> dict[str, list]:
  """Every config key that names something, with its valid names."""
  from score_sde import consistency, likelihood, models, parameterization, sampling, sde_lib
  from score_sde import train_state
  from score_sde.models import compute, precond, unet_condition
  from score_sde.sampling import correctors, predictors, schedules, unipc
  return {
      'training.sde': sorted(sde_lib.SDES),
      'training.objective': ([None] + list(parameterization.PARAMETERIZATIONS)
                             + list(consistency.OBJECTIVES)),
      'training.consistency_metric': sorted(consistency.METRICS),
      'model.name': sorted(models.MODELS),
      'model.precond': list(precond.PRECONDS),
      'model.dtype': list(compute.DTYPES),
      'model.embedding_type': ['fourier', 'positional'],
      'model.beta_schedule': list(sde_lib.BETA_SCHEDULES),
      'model.unet_preset': sorted(unet_condition.PRESETS),
      'optim.optimizer': sorted(train_state.OPTIMIZERS),
      'optim.decay': list(train_state.DECAYS),
      'sampling.method': sorted(sampling.METHODS),
      'sampling.predictor': sorted(predictors.PREDICTORS),
      'sampling.corrector': sorted(correctors.CORRECTORS),
      'sampling.time_schedule': [None] + list(schedules.SCHEDULE_NAMES),
      'sampling.unipc_variant': list(unipc.VARIANTS),
      'eval.likelihood_hutchinson_type': sorted(likelihood.HUTCHINSON_TYPES),
      'eval.bpd_dataset': ['train', 'test'],
  }


def _leaves(node, prefix: str = ''):
  for key in node.keys():
    value = node[key]
    if hasattr(value, 'keys'):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _check_values(config, mode: str = 'train') -> None:
  for key, value in _leaves(config):   # NaN passes every comparison below, and means nothing
    if isinstance(value, float) and math.isnan(value):
      raise errors.ConfigError(f'{key} = nan is not a number.')
  for key in POSITIVE + (CLASSIFIER_POSITIVE if mode == 'train_classifier' else ()):
    value = _get(config, key)
    if value is not None and not value > 0:
      raise errors.ConfigError(f'{key} = {value!r} must be positive.')
  for key in NON_NEGATIVE:
    value = _get(config, key)
    if value is not None and value < 0:
      raise errors.ConfigError(f'{key} = {value!r} must be >= 0.')
  for key in UNIT_INTERVAL:
    value = _get(config, key)
    if value is not None and not 0 <= value <= 1:
      raise errors.ConfigError(f'{key} = {value!r} must be in [0, 1].')
  low = _get(config, 'sampling.guidance_sigma_min')
  high = _get(config, 'sampling.guidance_sigma_max')
  if low is not None and high is not None and low > high:
    raise errors.ConfigError(
        f'The guidance interval [sampling.guidance_sigma_min, guidance_sigma_max] = [{low}, '
        f'{high}] is empty: guidance would never apply. Give guidance_sigma_min <= '
        'guidance_sigma_max.')


def _check_names(config) -> None:
  from score_sde import datasets
  for key, valid in _choices().items():
    value = _get(config, key, default=valid[0])
    if value not in valid:
      raise errors.ConfigError(f'Unknown {key} {value!r}; valid: {valid}.')
  name = config.data.dataset
  if name not in datasets.valid_dataset_names():
    raise errors.ConfigError(datasets.unknown_dataset_message(name))
  if config.model.name in PAPER_PRECOND_ONLY and _get(config, 'model.precond') != 'paper':
    raise errors.ConfigError(
        f'model.precond {config.model.precond!r} is not available for model '
        f'{config.model.name!r}, which supports only \'paper\' (EDM preconditioning: '
        f'{sorted(set(_choices()["model.name"]) - set(PAPER_PRECOND_ONLY))}).')


def _check_effective(config) -> None:
  """Settings that the rest of the config leaves without effect. Only values that switch
  something on are flagged, so the shipped defaults (off) pass."""
  t, m, d = config.training, config.model, config.data
  if _get(config, 'training.likelihood_weighting') and not t.continuous:
    raise errors.ConfigError(
        'training.likelihood_weighting=True has no effect with training.continuous=False (the '
        "discrete DDPM / SMLD losses are the paper's unweighted ones); set "
        'training.continuous=True or likelihood_weighting=False.')
  if m.name == 'mlp' and _get(config, 'model.dropout'):
    raise errors.ConfigError(f"model.dropout={m.dropout} has no effect on model 'mlp', which has "
                             'no dropout; set it to 0.')
  if d.image_size is None and _get(config, 'data.random_flip'):
    raise errors.ConfigError('data.random_flip=True has no effect on 2-D data (it mirrors '
                             'images); set it to False.')


def _check_few_step(config) -> None:
  """Few-step objectives (``consistency.OBJECTIVES``): drawn by 'few_step' only, unconditional,
  unclipped; MeanFlow with a two-time MLP. (Distillation's teacher: ``teacher.check``.)"""
  from score_sde import consistency
  objective = _get(config, 'training.objective')
  two_times = _get(config, 'model.two_times', False)
  if two_times and objective != 'meanflow':
    raise errors.ConfigError(f"model.two_times=True is MeanFlow's network; it has no use with "
                             f"training.objective={objective!r}: set it to False.")
  for key in ('training.teacher_workdir', 'training.teacher_init', 'training.consistency_ratio'):
    if _get(config, key) and objective != 'cd':
      raise errors.ConfigError(f'{key} has no effect with training.objective={objective!r}; it '
                               "is about the teacher of 'cd'.")
  if _get(config, 'training.teacher_substeps', 1) != 1 and objective != 'cd':
    raise errors.ConfigError(f'training.teacher_substeps has no effect with training.objective='
                             f"{objective!r}; it is about the teacher of 'cd'.")
  ratio = _get(config, 'training.consistency_ratio')
  if ratio is not None and ratio <= 1:
    raise errors.ConfigError(f'training.consistency_ratio = {ratio} must be > 1 (the ratio of '
                             'the two noise levels of a consistency pair).')
  if _get(config, 'training.teacher_substeps', 1) < 1:
    raise errors.ConfigError('training.teacher_substeps must be >= 1.')
  if objective not in consistency.OBJECTIVES:
    return
  if config.sampling.method != 'few_step':
    raise errors.ConfigError(f'A model of training.objective={objective!r} draws with '
                             f"sampling.method='few_step' only, not {config.sampling.method!r}.")
  for key in ('model.class_conditional', 'sampling.x0_clip'):
    if _get(config, key):
      raise errors.ConfigError(f'{key}={_get(config, key)!r} is not available with the few-step '
                               f'training.objective={objective!r}.')
  if objective == 'meanflow' and not two_times:
    raise errors.ConfigError("training.objective='meanflow' needs a network of two times: set "
                             "model.two_times=True (model 'mlp' or 'ncsnpp').")
  if two_times and config.model.name not in ('mlp', 'ncsnpp'):
    raise errors.ConfigError(f"model.two_times=True is available for models 'mlp' and 'ncsnpp' "
                             f'only, not {config.model.name!r}.')


def _check_posthoc_and_clip(config) -> None:
  """Post-hoc EMA lengths in range; x0 clipping by a known rule, and only for bounded data."""
  from score_sde import posthoc_ema
  from score_sde.sampling import x0_clip
  for sigma_rel in (_get(config, 'training.posthoc_ema_sigma_rels') or ()):
    posthoc_ema.gamma_of_sigma_rel(sigma_rel)
  if _get(config, 'sampling.ema_sigma_rel') is not None:
    posthoc_ema.gamma_of_sigma_rel(config.sampling.ema_sigma_rel)
  clip = _get(config, 'sampling.x0_clip')
  x0_clip.check(clip, _get(config, 'sampling.dynamic_threshold_percentile', 0.995))
  if clip is not None:
    x0_clip.data_range(config)


def check_training_overrides(config, overridden: Sequence[str]) -> None:
  """ConfigError for a key set on train.py's command line (``overridden``: dotted keys) that
  this config does not read: ``training.label_dropout`` without a class-conditional model,
  ``model.fourier_scale`` without the Fourier embedding, and ``sampling.*`` that the snapshot
  sampler's method does not read (``check_sampling_overrides``)."""
  for key in overridden:
    if key == 'training.label_dropout' and not config.model.class_conditional:
      raise errors.ConfigError('--config.training.label_dropout has no effect: the model is not '
                               'class-conditional (model.class_conditional=False).')
    if (key == 'model.fourier_scale' and config.model.name in ('ncsnpp', 'mlp')
        and config.model.embedding_type != 'fourier'):
      raise errors.ConfigError('--config.model.fourier_scale has no effect with '
                               f'model.embedding_type={config.model.embedding_type!r}; it scales '
                               "the 'fourier' embedding.")
  if config.training.snapshot_sampling:
    check_sampling_overrides(config, overridden)


def _built(what: str, build: Callable[[], Any]) -> Any:
  """Runs a factory: its ValueError about config values becomes a ConfigError."""
  try:
    return build()
  except errors.ScoreSDEError:
    raise
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  except AttributeError as e:  # a key the factory needs is missing from the config
    raise errors.ConfigError(f'Building the {what}: {e}') from e


def _check_batch(config, key: str, num_local_devices: int) -> int:
  from score_sde import parallel
  return _built('batch', lambda: parallel.per_device_batch_size(_get(config, key),
                                                                num_local_devices))


def check(config, mode: str = 'train', num_local_devices: int | None = None) -> None:
  """Raises ``errors.ConfigError`` for the first problem in ``config`` (module docstring)."""
  import jax

  from score_sde import datasets, models, sampling, sde_lib, train_state
  from score_sde.sampling import autoguidance
  if mode not in MODES:
    raise ValueError(f'Unknown mode {mode!r}; valid: {list(MODES)}.')
  n = num_local_devices or jax.local_device_count()
  _check_values(config, mode)
  _check_names(config)
  _check_effective(config)
  _check_few_step(config)
  _check_posthoc_and_clip(config)
  autoguidance.check(config)
  datasets.latents.check_config(config)
  datasets.contexts.check_config(config)
  sde = _built('SDE', lambda: sde_lib.get_sde(config))
  _built('model', lambda: models.get_model(config))
  _built('optimizer', lambda: train_state.get_optimizer(config.optim, config.training.n_iters))
  if mode == 'train':
    datasets.contexts.check_training_data(config)
    _check_batch(config, 'training.batch_size', n)
    _check_batch(config, 'eval.batch_size', n)
  if mode == 'eval':
    enabled = [k for k in ('enable_loss', 'enable_bpd', 'enable_sampling') if config.eval.get(k)]
    if not enabled:
      raise errors.ConfigError('--mode=eval has nothing to compute: set one of '
                               '--config.eval.enable_loss / enable_bpd / enable_sampling to True.')
    _check_batch(config, 'eval.batch_size', n)
  if mode == 'train_classifier':
    if config.data.num_classes is None:
      raise errors.ConfigError('Training a classifier needs labelled data: set data.num_classes.')
    _check_batch(config, 'classifier.batch_size', n)
  per_device = 1   # the sampler is checked even when unused: sample.py will use it
  if mode == 'sample' or (mode == 'train' and config.training.snapshot_sampling):
    per_device = _check_batch(config, 'sampling.batch_size', n)
  shape = (per_device,) + datasets.sample_shape(config)
  _built('sampler', lambda: sampling.get_sampler(config, sde, shape))


def check_sampling_overrides(config, overridden: Sequence[str], prefix: str = '--config.') -> None:
  """ConfigError for a ``sampling.*`` key set on the command line (``overridden``: dotted keys)
  that the configured sampler does not read, e.g. ``sampling.snr`` with ``method='ode'``;
  ``prefix`` says where the key was set."""
  from score_sde import sampling
  s = config.sampling
  method = sampling.METHODS.get(s.method)
  for key in overridden:
    section, _, name = key.partition('.')
    if section != 'sampling' or method is None:
      continue
    if name not in set(method.keys) | set(sampling.EVERY_METHOD):
      raise errors.ConfigError(
          f'{prefix}{key} has no effect with sampling.method={s.method!r}, which reads '
          f'{", ".join(method.keys)} (and guidance, batch_size).')
    if s.method == 'pc' and name in ('snr', 'n_steps_each') and s.corrector == 'none':
      raise errors.ConfigError(f"{prefix}{key} has no effect with sampling.corrector='none'; "
                               "set a corrector ('langevin' or 'ald').")
