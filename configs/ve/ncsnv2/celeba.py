"""NCSNv2 on CelebA 64x64: SMLD training, annealed Langevin dynamics."""
from configs import default_celeba_configs


def get_config():
  config = default_celeba_configs.get_default_configs()
  training = config.training
  training.sde = 'vesde'
  training.continuous = False

  sampling = config.sampling
  sampling.predictor = 'none'
  sampling.corrector = 'ald'
  sampling.n_steps_each = 5
  sampling.snr = 0.128

  model = config.model
  model.scale_by_sigma = True
  model.normalization = 'InstanceNorm++'
  model.nonlinearity = 'elu'
  model.name = 'ncsnv2_64'
  model.num_scales = 500
  model.ema_rate = 0.999

  optim = config.optim
  optim.warmup = 0
  optim.grad_clip = -1.0   # no clipping
  optim.lr = 1e-4
  return config
