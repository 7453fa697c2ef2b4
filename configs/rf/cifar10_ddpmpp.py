"""DDPM++ (cont.) on CIFAR-10 as a rectified flow: the network predicts the velocity
z - x(0) of x(t) = (1 - t) x(0) + t z and is trained by flow matching."""
from configs.vp import cifar10_ddpmpp_continuous


def get_config():
  config = cifar10_ddpmpp_continuous.get_config()
  config.training.sde = 'rectified_flow'
  config.training.objective = 'velocity'
  config.model.parameterization = 'velocity'
  config.sampling.method = 'ode'
  return config
