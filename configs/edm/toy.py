"""EDM on the 2-D toys: ``configs/edm/toy.py:spiral`` (any name of ``toy.TOY_DISTRIBUTIONS``;
default gaussian_mixture).

The EDM sigma process x(t) = x(0) + sigma(t) z with sigma(t) EDM's rho = 7 ramp from 0.002 to
10 (about the data's diameter), EDM's preconditioned MLP and loss (ln sigma ~ N(P_mean, P_std^2),
weight lambda(sigma)), and EDM's Heun sampler with 18 steps (35 NFE). sigma_data is the data's
per-coordinate std and P_mean is EDM's -1.2 shifted by ln(sigma_data / 0.5), so the noise levels
sit where EDM puts them relative to the data's scale.
"""
import math

from configs import default_toy

SIGMA_DATA = {'gaussian_mixture': 0.57, 'spiral': 1.5, 'swiss_roll': 1.4, 'checkerboard': 1.7,
              'two_moons': 1.5}


def get_config(dataset: str = 'gaussian_mixture'):
  config = default_toy.get_config()
  config.training.sde = 'edm'
  config.data.dataset = dataset
  model = config.model
  model.precond = 'edm'
  model.sigma_min = 0.002
  model.sigma_max = 10.0
  model.sigma_data = SIGMA_DATA.get(dataset, 1.0)
  model.P_mean = -1.2 + math.log(model.sigma_data / 0.5)
  sampling = config.sampling
  sampling.method = 'heun'
  sampling.num_steps = 18
  return config
