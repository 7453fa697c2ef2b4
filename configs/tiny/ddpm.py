"""Tiny DDPM (VP, discrete); 32 channels because DDPM's GroupNorm has 32 groups."""
from configs import tiny
from configs.vp.ddpm import cifar10


def get_config():
  return tiny.shrink(cifar10.get_config(), nf=32)
