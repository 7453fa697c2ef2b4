"""NCSNv2 on LSUN bedroom 128x128: SMLD training, annealed Langevin dynamics."""
from configs import default_lsun_configs


def get_config():
  config = default_lsun_configs.get_default_configs()
  training = config.training
  training.sde = 'vesde'
  training.continuous = False
  training.batch_size = 128

  sampling = config.sampling
  sampling.predictor = 'none'
  sampling.corrector = 'ald'
  sampling.n_steps_each = 3
  sampling.snr = 0.095

  data = config.data
  data.dataset = 'lsun/bedroom'
  data.image_size = 128

  model = config.model
  model.scale_by_sigma = True
  model.normalization = 'InstanceNorm++'
  model.nonlinearity = 'elu'
  model.name = 'ncsnv2_128'
  model.sigma_max = 190.0
  model.num_scales = 1086
  model.ema_rate = 0.9999

  optim = config.optim
  optim.warmup = 0
  optim.grad_clip = -1.0   # no clipping
  optim.lr = 1e-4
  return config
