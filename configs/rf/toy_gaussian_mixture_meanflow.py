"""gaussian mixture, rectified flow: MeanFlow's average-velocity network u(x, r, t), drawn in
1-2 jumps."""
from configs.rf import toy_gaussian_mixture


def get_config():
  config = toy_gaussian_mixture.get_config()
  config.training.objective = 'meanflow'
  config.model.two_times = True
  config.model.parameterization = None   # the network's output is u itself
  config.optim.lr = 1e-3
  config.sampling.method = 'few_step'
  config.sampling.num_steps = 2
  return config
