"""NCSN++ (cont., small) on the digits with the VE SDE."""
from configs import default_digits


def get_config():
  config = default_digits.get_default_configs()
  config.training.sde = 'vesde'
  # EDM preconditioning (default_digits) scales the network's input and output itself.
  config.model.scale_by_sigma = False
  return config
