"""NCSN++ (cont.) on CelebA-HQ 1024x1024 with the VE SDE (an image folder: set data.path)."""
from configs import default_lsun_configs


def get_config():
  config = default_lsun_configs.get_default_configs()
  training = config.training
  training.sde = 'vesde'
  training.batch_size = 8

  sampling = config.sampling
  sampling.predictor = 'reverse_diffusion'
  sampling.corrector = 'langevin'
  sampling.snr = 0.15

  evaluate = config.eval
  evaluate.begin_ckpt = 1
  evaluate.batch_size = 1024

  data = config.data
  data.dataset = 'folder'
  data.image_size = 1024

  model = config.model
  model.scale_by_sigma = True
  model.ema_rate = 0.9999
  model.sigma_max = 1348.0
  model.nf = 16
  model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
  model.num_res_blocks = 1
  return config
