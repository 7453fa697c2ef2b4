"""EDM (Karras et al. 2022) as an SDE: the sigma process, preconditioning, loss and Heun sampler."""


def on_images(config):
  """An image config turned into EDM's: sigma from 0.002 to 80, the preconditioned network
  and loss (sigma_data 0.5), Heun with 18 steps (35 NFE)."""
  config.training.sde = 'edm'
  model = config.model
  model.precond = 'edm'
  model.sigma_min = 0.002
  model.sigma_max = 80.0
  model.sigma_data = 0.5
  config.sampling.method = 'heun'
  config.sampling.num_steps = 18
  return config
