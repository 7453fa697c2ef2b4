"""NCSN++ on CelebA 64x64, discrete-time SMLD training."""
from configs import default_celeba_configs


def get_config():
  config = default_celeba_configs.get_default_configs()
  training = config.training
  training.sde = 'vesde'
  training.continuous = False

  sampling = config.sampling
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'

  model = config.model
  model.scale_by_sigma = True
  model.ema_rate = 0.999
  model.embedding_type = 'positional'
  return config
