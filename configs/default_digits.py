"""Defaults for the scikit-learn digits (`score_sde.datasets.digits`) at their native 8x8 grey:
a small NCSN++ / DDPM++ that learns recognisable digits in minutes on a 2-core CPU.

Sized for the CPU: nf 16, two resolutions (8, 4) with one residual block each and attention at
8x8 (DDPM++'s layout, shrunk), batch 64, dropout off (1,527 training images, a few thousand
steps: the model underfits rather than overfits). The VP / sub-VP / VE files set the SDE and
the paper's per-SDE choices.

Two choices, each measured (benchmarks/RESULTS.md, "Digits that learn well"):
- **8x8, not 16x16.** The 16 px digits are the 8 px originals upsampled (bilinear); a 16 px model
  spends its capacity on that fixed upsampling and each step costs ~3x more. At 8 px the same
  network and steps give Fréchet distance 1.20 +- 0.13 where 16 px gave 2.56 +- 0.47 (VP,
  DPM-Solver++ 25 NFE, 3 x 256 samples; the classifier scores both at 16 px, upsampled as the data
  is). Pictures repeat each pixel (``plotting.VIEW_SIZE``).
- **EDM preconditioning** for every family (``model.precond = 'edm'``: c_in / c_skip / c_out,
  ln sigma ~ N(-1.2, 1.2^2), EDM's weighting; the SDE, its prior and its samplers stay the
  family's): with the paper's eps (VP, sub-VP) or score (VE) output the x0 prediction
  (x - s eps) / m multiplies the network's error by sigma = s / m, up to 150 at VP's T, and
  after 1,200 steps that prediction was 8-50x worse than the data mean above sigma = 20;
  deterministic samplers start from it and ~20-30% of their samples ended as pixel noise.
"""
from configs import base
from configs.default_cifar10_configs import add_image_model_keys


def get_default_configs():
  config = add_image_model_keys(base.get_base_config())
  training = config.training
  training.batch_size = 64
  training.n_iters = 4000                # ~5 min on a quiet 2-core CPU at 8x8
  training.log_freq = 100
  training.eval_freq = 500
  training.snapshot_freq = 2000
  training.snapshot_freq_for_preemption = 400
  training.snapshot_sampling = False     # sample after training (sample.py), not during
  training.continuous = True
  training.reduce_mean = True

  sampling = config.sampling
  sampling.method = 'dpm_solver'         # DPM-Solver++(2M), 25 steps: 25 NFE, seconds on a CPU
  sampling.order = 2
  sampling.num_steps = 25
  sampling.batch_size = 64

  evaluate = config.eval
  evaluate.batch_size = 64
  evaluate.num_samples = 500

  data = config.data
  data.dataset = 'digits'
  data.image_size = 8                    # native: no resampling (module docstring)
  data.num_channels = 1
  data.num_classes = 10
  data.centered = True
  data.random_flip = False               # a mirrored digit is not a digit
  data.num_workers = 1

  model = config.model
  model.nf = 16
  model.ch_mult = (1, 2)
  model.num_res_blocks = 1
  model.attn_resolutions = (8,)
  model.dropout = 0.0
  model.ema_rate = 0.995                  # a short run: average its last few hundred steps
  model.precond = 'edm'                  # see the module docstring
  model.sigma_data = 0.5
  model.sigma_min = 0.01
  model.sigma_max = 20.0                 # about the largest distance between two 16x16 images
  model.num_scales = 1000

  optim = config.optim
  optim.lr = 2e-3
  optim.warmup = 100
  optim.grad_clip = 1.0
  return config.lock()   # experiment files may change values, not add keys: a typo fails


def on_digits(config, image_size: int = 8):
  """Any image config (e.g. ``configs/tiny/*``) retargeted to the digits: grey, labelled, unflipped,
  at ``image_size`` (8: the digits' native size, no resampling)."""
  data = config.data
  data.dataset = 'digits'
  data.image_size = image_size
  data.num_channels = 1
  data.num_classes = 10
  data.random_flip = False
  if tuple(config.model.attn_resolutions) and max(config.model.attn_resolutions) > image_size:
    config.model.attn_resolutions = (image_size // 2,)
  return config
