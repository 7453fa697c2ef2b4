"""DDPM++ (cont., small) on the digits as rectified flow: a velocity network trained by flow
matching (x(t) = (1 - t) x(0) + t z, t in [0, 0.99])."""
from configs.vp import digits_ddpmpp_continuous


def get_config():
  config = digits_ddpmpp_continuous.get_config()
  config.training.sde = 'rectified_flow'
  config.training.objective = 'velocity'
  config.model.parameterization = 'velocity'
  config.model.precond = 'paper'   # a velocity network is well conditioned: x0 = x - t v
  return config
