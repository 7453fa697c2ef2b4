"""DDPM++ (cont., small) on the digits with the sub-VP SDE."""
from configs.vp import digits_ddpmpp_continuous


def get_config():
  config = digits_ddpmpp_continuous.get_config()
  config.training.sde = 'subvpsde'
  return config
