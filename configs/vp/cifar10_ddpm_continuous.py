"""The DDPM architecture (cont.) on CIFAR-10 with the VP SDE."""
from configs import default_cifar10_configs


def get_config():
  config = default_cifar10_configs.get_default_configs()
  training = config.training
  training.sde = 'vpsde'
  training.reduce_mean = True

  data = config.data
  data.centered = True

  model = config.model
  model.name = 'ddpm'
  model.num_res_blocks = 2
  return config
