"""gaussian mixture, VE SDE: a consistency model trained from scratch (iCT), drawn in 1-2 steps."""
from configs.ve import toy_gaussian_mixture


def get_config():
  config = toy_gaussian_mixture.get_config()
  config.training.objective = 'ct'
  config.optim.lr = 1e-3
  config.sampling.method = 'few_step'
  config.sampling.num_steps = 2
  return config
