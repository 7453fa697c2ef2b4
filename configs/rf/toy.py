"""Rectified flow / flow matching on the 2-D toys: ``configs/rf/toy.py:spiral`` (any name of
``toy.TOY_DISTRIBUTIONS``; default gaussian_mixture).

x(t) = (1 - t) x(0) + t z on t in [0, 0.99]; an MLP predicts the velocity, trained by flow
matching (the unweighted velocity regression); sampled by the probability-flow ODE.
"""
from configs import default_toy


def get_config(dataset: str = 'gaussian_mixture'):
  config = default_toy.get_config()
  config.training.sde = 'rectified_flow'
  config.training.objective = 'velocity'
  config.model.parameterization = 'velocity'
  config.data.dataset = dataset
  return config
