"""DDPM++ (cont.) on CIFAR-10 the EDM way (Karras et al. 2022): the sigma process from 0.002 to
80, the preconditioned network and loss (ln sigma ~ N(-1.2, 1.2^2)), Heun with 18 steps."""
from configs.vp import cifar10_ddpmpp_continuous


def get_config():
  config = cifar10_ddpmpp_continuous.get_config()
  config.training.sde = 'edm'
  model = config.model
  model.precond = 'edm'
  model.sigma_min = 0.002
  model.sigma_max = 80.0
  model.sigma_data = 0.5
  sampling = config.sampling
  sampling.method = 'heun'
  sampling.num_steps = 18
  return config
