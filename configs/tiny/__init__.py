"""Tiny versions of the paper's architectures: the same code paths with a few channels, for tests
and CPU experiments (seconds per step on a laptop). Each file here shrinks one paper config."""


def shrink(config, nf: int = 8, image_size: int = 8, ch_mult=(1, 2)):
  """A paper config with nf channels, one block per resolution and image_size-px images."""
  model = config.model
  model.nf = nf
  model.ch_mult = tuple(ch_mult)
  model.num_res_blocks = 1
  model.attn_resolutions = (image_size // 2,)
  config.data.image_size = image_size
  training = config.training
  training.batch_size = 8
  training.n_iters = 1000
  training.snapshot_freq = 500
  training.snapshot_freq_for_preemption = 100
  config.sampling.batch_size = 8
  config.eval.batch_size = 8
  config.optim.warmup = 10
  return config
