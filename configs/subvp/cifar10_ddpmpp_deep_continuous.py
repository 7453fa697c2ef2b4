"""DDPM++ deep (cont.) on CIFAR-10 with the sub-VP SDE."""
from configs.vp import cifar10_ddpmpp_deep_continuous as vp


def get_config():
  config = vp.get_config()   # the paper's sub-VP configs differ from the VP ones only here
  config.training.sde = 'subvpsde'
  return config
