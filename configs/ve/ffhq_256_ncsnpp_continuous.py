"""NCSN++ (cont.) on FFHQ 256x256 with the VE SDE (an image folder: set data.path)."""
from configs import default_lsun_configs


def get_config():
  config = default_lsun_configs.get_default_configs()
  training = config.training
  training.sde = 'vesde'

  sampling = config.sampling
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  data = config.data
  data.dataset = 'folder'

  model = config.model
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.sigma_max = 348.0
  return config
