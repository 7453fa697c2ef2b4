"""Defaults for CIFAR-10 (32x32) experiments, as in the paper's `default_cifar10_configs.py`.

Also declares every image-model key (`add_image_model_keys`), with NCSN++'s CIFAR-10 architecture
as the default values: experiment files change only what differs.
"""
from configs import base


def add_image_model_keys(config):
  """The keys of NCSN++ / DDPM++, DDPM and NCSNv2 (see score_sde/models), NCSN++ values."""
  model = config.model
  model.name = 'ncsnpp'
  model.normalization = 'GroupNorm'    # NCSNv2: 'InstanceNorm++'; NCSN++ / DDPM: GroupNorm always
  model.nonlinearity = 'swish'         # 'elu' | 'relu' | 'lrelu' | 'swish'
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 4
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.fir = True
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = 'biggan'       # 'ddpm' | 'biggan'
  model.progressive = 'none'           # 'none' | 'output_skip' | 'residual'
  model.progressive_input = 'residual' # 'none' | 'input_skip' | 'residual'
  model.progressive_combine = 'sum'    # 'sum' | 'cat'
  model.attention_type = 'ddpm'
  model.init_scale = 0.0
  model.conv_size = 3
  model.interpolation = 'bilinear'     # NCSNv2's RefineNet: 'bilinear' | 'nearest_neighbor'
  model.sigma_data = 0.5               # EDM preconditioning (model.precond = 'edm')
  return config


def get_default_configs():
  config = add_image_model_keys(base.get_base_config())
  training = config.training
  training.batch_size = 128
  training.n_iters = 1300001
  training.snapshot_freq = 50000
  training.snapshot_freq_for_preemption = 10000
  training.continuous = True
  training.reduce_mean = False

  config.sampling.snr = 0.16

  evaluate = config.eval
  evaluate.begin_ckpt = 9
  evaluate.end_ckpt = 26
  evaluate.batch_size = 1024

  data = config.data
  data.dataset = 'cifar10'
  data.image_size = 32
  data.num_channels = 3
  data.centered = False
  data.random_flip = True

  model = config.model
  model.sigma_min = 0.01
  model.sigma_max = 50.0
  model.num_scales = 1000
  model.dropout = 0.1
  model.embedding_type = 'fourier'
  model.fourier_scale = 16.0
  return config.lock()   # experiment files may change values, not add keys: a typo fails
