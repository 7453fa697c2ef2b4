"""gaussian mixture, class-conditional (labels: component k has class k mod 2), with the VE SDE."""
from configs import default_toy
from configs.ve import toy_gaussian_mixture


def get_config():
  return default_toy.conditional(toy_gaussian_mixture.get_config())
