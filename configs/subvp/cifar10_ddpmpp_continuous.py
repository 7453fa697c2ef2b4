"""DDPM++ (cont.) on CIFAR-10 with the sub-VP SDE."""
from configs import default_cifar10_configs


def get_config():
  config = default_cifar10_configs.get_default_configs()
  training = config.training
  training.sde = 'subvpsde'
  training.reduce_mean = True

  data = config.data
  data.centered = True

  model = config.model
  model.fir = False
  model.progressive_input = 'none'
  model.embedding_type = 'positional'
  return config
