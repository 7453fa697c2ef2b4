"""NCSN++ (cont.) on LSUN bedroom 256x256 with the VE SDE."""
from configs import default_lsun_configs


def get_config():
  config = default_lsun_configs.get_default_configs()
  training = config.training
  training.sde = 'vesde'

  sampling = config.sampling
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  data = config.data
  data.dataset = 'lsun/bedroom'

  model = config.model
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  return config
