"""Defaults for 2-D toy experiments: a small time-conditioned MLP trained on CPU in minutes."""
from configs import base


def get_config():
  config = base.get_base_config()
  training = config.training
  training.batch_size = 1024
  training.n_iters = 6000
  training.log_freq = 100
  training.eval_freq = 500
  training.snapshot_freq = 3000
  training.snapshot_freq_for_preemption = 1000
  training.continuous = True
  training.reduce_mean = True

  sampling = config.sampling
  sampling.batch_size = 2000
  # The probability-flow ODE (adaptive, ~120 NFE) gives visibly sharper samples of the demo model
  # than 500 Euler-Maruyama steps of the reverse SDE (--config.sampling.method=pc), whose injected
  # noise the slightly too smooth small-t score of a 90-second model does not fully remove.
  sampling.method = 'ode'
  sampling.num_steps = 500

  config.eval.batch_size = 2000

  data = config.data
  data.dataset = 'spiral'     # see score_sde.datasets.toy.TOY_DISTRIBUTIONS
  data.image_size = None
  data.num_channels = None
  data.dim = 2
  data.centered = True
  data.random_flip = False

  model = config.model
  model.name = 'mlp'
  model.nf = 128              # hidden width
  model.num_layers = 3
  model.embedding_type = 'fourier'
  model.fourier_scale = 1.0        # of log(noise label): smooth in t
  model.input_fourier_scale = 1.0  # random Fourier features of x: fine spatial detail (None: off)
  model.dropout = 0.0
  model.ema_rate = 0.999
  model.sigma_min = 0.01
  model.sigma_max = 10.0      # VE: about the data's diameter (shapes span [-3, 3]^2)

  optim = config.optim
  optim.lr = 5e-3
  optim.warmup = 100
  optim.grad_clip = 1.0
  return config.lock()   # experiment files may change values, not add keys: a typo fails


def conditional(config):
  """``config`` made class-conditional on the toy's two labels (``datasets.toy``: a spiral's
  arm, a mixture component's index mod 2), with 10% label dropout so that one network gives
  s(x, t, y) and s(x, t): classifier-free guidance via ``sample.py --labels=0,1
  --config.sampling.guidance_scale=2``."""
  config.data.num_classes = 2
  config.model.class_conditional = True
  config.training.label_dropout = 0.1
  return config
