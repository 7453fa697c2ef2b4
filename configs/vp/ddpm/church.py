"""DDPM on LSUN church 256x256."""
from configs import default_lsun_configs


def get_config():
  config = default_lsun_configs.get_default_configs()
  training = config.training
  training.sde = 'vpsde'
  training.reduce_mean = True
  training.continuous = False

  sampling = config.sampling
  sampling.predictor = 'ancestral_sampling'

  data = config.data
  data.centered = True
  data.dataset = 'lsun/church_outdoor'

  model = config.model
  model.name = 'ddpm'
  model.num_res_blocks = 2
  model.ch_mult = (1, 1, 2, 2, 4, 4)

  optim = config.optim
  optim.lr = 2e-5
  return config
