"""Tiny DDPM++ (VP, continuous, positional embedding)."""
from configs import tiny
from configs.vp import cifar10_ddpmpp_continuous


def get_config():
  return tiny.shrink(cifar10_ddpmpp_continuous.get_config())
