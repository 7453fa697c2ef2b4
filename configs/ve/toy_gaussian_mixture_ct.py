"""gaussian mixture, VE SDE: a consistency model trained from scratch (iCT), drawn in 1-2 steps."""
from configs.ve import toy_gaussian_mixture


def get_config():
  config = toy_gaussian_mixture.get_config()
  config.training.objective = 'ct'
  # The network predicts x(0): f = c_skip y + (1 - c_skip) D is then well scaled at every noise
  # level (read as a score, D = x + sigma^2 s multiplies its errors by sigma^2 = 100 at sigma_max).
  config.model.parameterization = 'x0'
  config.optim.lr = 1e-3
  config.sampling.method = 'few_step'
  config.sampling.num_steps = 2
  return config
