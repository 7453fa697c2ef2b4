"""Samplers: ``get_sampler(config, sde, shape)`` -> ``sampler(rng, score_fn) -> (samples, nfe)``.

``samples`` has the per-device batch ``shape`` (B, ...) and stays in the model's data space (the
caller applies the inverse scaler); ``nfe`` is the number of score evaluations actually made
(an int32 scalar array). Samplers are pure and traceable: call them inside jit / pmap with a
``score_fn(x, t)`` built there from model parameters, or a closed-form score. Called at top level
they compile once per ``score_fn`` and reuse the executable (``score_sde.compile_once``): keep
the same score_fn object across calls.

``METHODS`` is the one table of methods (``config.sampling.method``): name -> ``Method`` (its
builder, the ``sampling.*`` keys it reads, its NFE per step). Config checks, sample.py and the
experiment runner read it; adding a method is its file and one entry here.
  'pc'          the paper's predictor–corrector samplers (``predictor``, ``corrector``, ``snr``, ...)
  'ode'         the probability-flow ODE, adaptive Dopri5 in diffrax (``rtol``, ``atol``)
  'dpm_solver'  DPM-Solver++ multistep, ``order`` 1–3 (default schedule: uniform in logSNR)
  'ddim'        DDIM, i.e. DPM-Solver++ of order 1
  'heun'        EDM's 2nd-order Heun sampler with optional churn (default schedule: EDM rho)
  'unipc'       UniPC multistep predictor-corrector, ``order`` 1–3, ``unipc_variant`` 'bh1' | 'bh2'
  'few_step'    1..K steps of a model trained for it (``training.objective`` 'ct' | 'cd' |
                'meanflow'): multistep consistency sampling or MeanFlow's jumps

The fixed-grid methods (dpm_solver, ddim, heun, unipc, few_step) also step on an optimised grid:
``time_schedule='optimised'`` with ``grid_path`` a file of ``grid_optimisation``.

Score-function and step wrappers that work with these: ``guidance`` (classifier-free and
classifier guidance) and ``controllable_generation`` (inpainting, colorization).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from score_sde.compile_once import compile_once
from score_sde.errors import ConfigError
from score_sde.sampling import correctors, few_step, ode, pc, predictors, solvers, unipc


def _num_steps(cfg, sde) -> int:
  num_steps = sde.N if cfg.num_steps is None else int(cfg.num_steps)
  if num_steps < 1:
    raise ConfigError(f'sampling.num_steps must be >= 1 (or None for sde.N), got {cfg.num_steps}.')
  return num_steps


def _fixed_grid_only(cfg, method):
  if cfg.time_schedule not in (None, 'uniform'):
    raise ConfigError(f'time_schedule {cfg.time_schedule!r} is not available for method '
                      f"{method!r}: its time grid is the paper's uniform one (use None or "
                      "'uniform').")


def _pc(cfg, sde, shape):
  _fixed_grid_only(cfg, 'pc')
  return pc.get_pc_sampler(sde, shape, predictor=cfg.predictor, corrector=cfg.corrector,
                           snr=cfg.snr, n_steps_each=cfg.n_steps_each,
                           noise_removal=cfg.noise_removal, eps=cfg.eps,
                           num_steps=_num_steps(cfg, sde), probability_flow=cfg.probability_flow)


def _ode(cfg, sde, shape):
  _fixed_grid_only(cfg, 'ode')
  return ode.get_ode_sampler(sde, shape, rtol=cfg.rtol, atol=cfg.atol, eps=cfg.eps,
                             noise_removal=cfg.noise_removal)


def _dpm_solver(cfg, sde, shape, order=None):
  return solvers.get_dpm_solver_sampler(
      sde, shape, num_steps=_num_steps(cfg, sde), order=order or cfg.order, eps=cfg.eps,
      time_schedule=cfg.time_schedule or 'logsnr', rho=cfg.rho, grid_path=cfg.grid_path)


def _ddim(cfg, sde, shape):
  return _dpm_solver(cfg, sde, shape, order=1)


def _heun(cfg, sde, shape):
  return solvers.get_heun_sampler(
      sde, shape, num_steps=_num_steps(cfg, sde), eps=cfg.eps,
      time_schedule=cfg.time_schedule or 'edm', rho=cfg.rho, S_churn=cfg.S_churn,
      S_min=cfg.S_min, S_max=cfg.S_max, S_noise=cfg.S_noise, grid_path=cfg.grid_path)


def _unipc(cfg, sde, shape):
  return unipc.get_unipc_sampler(
      sde, shape, num_steps=_num_steps(cfg, sde), order=cfg.order, variant=cfg.unipc_variant,
      eps=cfg.eps, time_schedule=cfg.time_schedule or 'logsnr', rho=cfg.rho,
      grid_path=cfg.grid_path)


def _few_step(cfg, sde, shape, objective=None):
  return few_step.get_few_step_sampler(
      sde, shape, objective=objective, num_steps=1 if cfg.num_steps is None else _num_steps(cfg, sde),
      eps=cfg.eps, time_schedule=cfg.time_schedule, rho=cfg.rho, grid_path=cfg.grid_path)


@dataclasses.dataclass(frozen=True)
class Method:
  """A sampling method: ``build(sampling config, sde, shape) -> sampler``; the ``sampling.*``
  ``keys`` it reads (beyond ``EVERY_METHOD``); ``nfe_per_step(sampling config)``, None for an
  adaptive method (its NFE is measured); ``nfe_saved``: evaluations its last step skips, so
  ``num_steps`` steps cost ``num_steps * nfe_per_step - nfe_saved``; ``defaults``: the values
  of its keys when a config written for another method is switched to it (``settings``);
  ``training_keys``: ``training.*`` keys passed to ``build`` as keyword arguments (what the
  model was trained for, e.g. few_step's ``objective``)."""
  build: Callable
  keys: tuple[str, ...]
  nfe_per_step: Callable | None = None
  nfe_saved: int = 0
  defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  training_keys: tuple[str, ...] = ()

  def __post_init__(self):
    if not set(self.defaults) <= set(self.keys):
      raise ConfigError(f'Method defaults {sorted(set(self.defaults) - set(self.keys))} are not '
                        f'among the keys it reads, {list(self.keys)}.')

  def steps_for_nfe(self, cfg, nfe: int) -> int | None:
    """The ``num_steps`` that spends at most ``nfe`` evaluations (None: adaptive)."""
    if self.nfe_per_step is None:
      return None
    return (nfe + self.nfe_saved) // max(self.nfe_per_step(cfg), 1)


# Read by every method: its name, the batch, the score-function wrappers (guidance, x0
# clipping) and the parameters' EMA.
EVERY_METHOD = ('method', 'batch_size', 'guidance_scale', 'guidance_sigma_min',
                'guidance_sigma_max', 'classifier_scale', 'x0_clip', 'dynamic_threshold_percentile',
                'ema_sigma_rel', 'autoguidance_workdir', 'autoguidance_scale',
                'autoguidance_sigma_min', 'autoguidance_sigma_max')


def _one(cfg):
  return 1


def _pc_nfe(cfg):
  # An unknown predictor counts 1 here; building the sampler then names it.
  return (predictors.predictor_nfe(cfg.predictor) if cfg.predictor in predictors.PREDICTORS
          else 1) + correctors.corrector_nfe(cfg.corrector, cfg.n_steps_each)


_SCHEDULED = ('num_steps', 'eps', 'time_schedule', 'rho', 'grid_path')
# Defaults are the schema's values (configs/base.py); num_steps None is the SDE's N.
_GRID = {'num_steps': None, 'time_schedule': None, 'rho': 7.0, 'grid_path': None}
METHODS = {
    'pc': Method(_pc, ('predictor', 'corrector', 'snr', 'n_steps_each', 'noise_removal', 'eps',
                       'num_steps', 'probability_flow', 'time_schedule'), _pc_nfe,
                 defaults={'predictor': 'euler_maruyama', 'corrector': 'none', 'snr': 0.16,
                           'n_steps_each': 1, 'noise_removal': True, 'num_steps': None,
                           'probability_flow': False, 'time_schedule': None}),
    'ode': Method(_ode, ('rtol', 'atol', 'eps', 'noise_removal', 'time_schedule'),
                  defaults={'rtol': 1e-5, 'atol': 1e-5, 'noise_removal': True,
                            'time_schedule': None}),
    'dpm_solver': Method(_dpm_solver, _SCHEDULED + ('order',), _one,
                         defaults={**_GRID, 'order': 3}),
    'ddim': Method(_ddim, _SCHEDULED, _one, defaults=_GRID),
    'heun': Method(_heun, _SCHEDULED + ('S_churn', 'S_min', 'S_max', 'S_noise'),
                   lambda cfg: 2, nfe_saved=1,   # 2 num_steps - 1 evaluations
                   defaults={**_GRID, 'S_churn': 0.0, 'S_min': 0.0, 'S_max': float('inf'),
                             'S_noise': 1.0}),
    'unipc': Method(_unipc, _SCHEDULED + ('order', 'unipc_variant'), _one,
                    defaults={**_GRID, 'order': 3, 'unipc_variant': 'bh1'}),
    'few_step': Method(_few_step, _SCHEDULED, _one, defaults=_GRID, training_keys=('objective',)),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ConfigError(f'Unknown sampling method {name!r}; valid: {sorted(METHODS)}.')
  return METHODS[name]


def get_sampler(config, sde, shape):
  """Builds the sampler named by ``config.sampling.method`` for ``sde`` and per-device ``shape``."""
  cfg, method = config.sampling, get_method(config.sampling.method)
  trained = {k: config.get('training', {}).get(k) for k in method.training_keys}
  return compile_once(method.build(cfg, sde, tuple(shape), **trained))
