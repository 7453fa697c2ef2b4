"""NCSN++ deep (cont.) on CIFAR-10 with the VE SDE."""
from configs import default_cifar10_configs


def get_config():
  config = default_cifar10_configs.get_default_configs()
  training = config.training
  training.sde = 'vesde'
  training.n_iters = 950001

  sampling = config.sampling
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  model = config.model
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.num_res_blocks = 8
  return config
