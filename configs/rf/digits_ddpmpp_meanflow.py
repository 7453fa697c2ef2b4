"""DDPM++ (cont., small) on the digits as MeanFlow: the network takes a second time, the span
t - r (``model.two_times``), and learns the average velocity u(x, r, t) of the rectified flow;
it draws in 1-2 jumps with ``few_step``."""
from configs.rf import digits_ddpmpp_continuous


def get_config():
  config = digits_ddpmpp_continuous.get_config()
  config.training.objective = 'meanflow'
  config.model.two_times = True
  config.model.parameterization = None   # the network's output is u itself
  config.sampling.method = 'few_step'
  config.sampling.num_steps = 2
  config.training.batch_size = 64   # as measured (the family config trains at 128)
  return config
