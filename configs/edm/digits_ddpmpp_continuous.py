"""DDPM++ (cont., small) on the digits with EDM's sigma process, preconditioning and loss
(log-normal sigma, EDM weighting), sampled by EDM's Heun with 18 steps (35 NFE)."""
from configs.vp import digits_ddpmpp_continuous


def get_config():
  config = digits_ddpmpp_continuous.get_config()
  config.training.sde = 'edm'
  model = config.model
  model.precond = 'edm'
  model.sigma_min = 0.002
  model.sigma_max = 80.0
  config.sampling.method = 'heun'
  config.sampling.num_steps = 18
  return config
