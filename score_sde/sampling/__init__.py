"""Samplers: ``get_sampler(config, sde, shape)`` -> ``sampler(rng, score_fn) -> (samples, nfe)``.

``samples`` has the per-device batch ``shape`` (B, ...) and stays in the model's data space (the
caller applies the inverse scaler); ``nfe`` is the number of score evaluations actually made
(an int32 scalar array). Samplers are pure and traceable: call them inside jit / pmap with a
``score_fn(x, t)`` built there from model parameters, or a closed-form score. Called at top level
they compile once per ``score_fn`` and reuse the executable (``score_sde.compile_once``): keep
the same score_fn object across calls.

Methods (``config.sampling.method``), one builder each in ``METHODS``:
  'pc'          the paper's predictor–corrector samplers (``predictor``, ``corrector``, ``snr``, ...)
  'ode'         the probability-flow ODE, adaptive Dopri5 in diffrax (``rtol``, ``atol``)
  'dpm_solver'  DPM-Solver++ multistep, ``order`` 1–3 (default schedule: uniform in logSNR)
  'ddim'        DDIM, i.e. DPM-Solver++ of order 1
  'heun'        EDM's 2nd-order Heun sampler with optional churn (default schedule: EDM rho)
"""
from __future__ import annotations

from score_sde.compile_once import compile_once
from score_sde.errors import ConfigError
from score_sde.sampling import ode, pc, solvers


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
      time_schedule=cfg.time_schedule or 'logsnr', rho=cfg.rho)


def _ddim(cfg, sde, shape):
  return _dpm_solver(cfg, sde, shape, order=1)


def _heun(cfg, sde, shape):
  return solvers.get_heun_sampler(
      sde, shape, num_steps=_num_steps(cfg, sde), eps=cfg.eps,
      time_schedule=cfg.time_schedule or 'edm', rho=cfg.rho, S_churn=cfg.S_churn,
      S_min=cfg.S_min, S_max=cfg.S_max, S_noise=cfg.S_noise)


METHODS = {
    'pc': _pc,
    'ode': _ode,
    'dpm_solver': _dpm_solver,
    'ddim': _ddim,
    'heun': _heun,
}


def get_sampler(config, sde, shape):
  """Builds the sampler named by ``config.sampling.method`` for ``sde`` and per-device ``shape``."""
  cfg = config.sampling
  if cfg.method not in METHODS:
    raise ConfigError(f'Unknown sampling method {cfg.method!r}; valid: {sorted(METHODS)}.')
  return compile_once(METHODS[cfg.method](cfg, sde, tuple(shape)))
