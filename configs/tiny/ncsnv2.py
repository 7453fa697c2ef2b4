"""Tiny NCSNv2 (ncsnv2_64: VE, discrete SMLD training, annealed Langevin dynamics)."""
from configs import tiny
from configs.ve.ncsnv2 import cifar10


def get_config():
  return tiny.shrink(cifar10.get_config())
