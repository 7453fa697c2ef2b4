"""Tiny NCSN++ (VE, continuous, Fourier embedding, FIR, residual input pyramid)."""
from configs import tiny
from configs.ve import cifar10_ncsnpp_continuous


def get_config():
  return tiny.shrink(cifar10_ncsnpp_continuous.get_config())
