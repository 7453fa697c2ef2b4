"""NCSN++ deep (cont.) on CIFAR-10 with the sub-VP SDE."""
from configs import default_cifar10_configs


def get_config():
  config = default_cifar10_configs.get_default_configs()
  training = config.training
  training.sde = 'subvpsde'
  training.reduce_mean = True
  training.n_iters = 950001

  data = config.data
  data.centered = True

  model = config.model
  model.num_res_blocks = 8
  model.embedding_type = 'positional'
  return config
