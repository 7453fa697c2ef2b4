"""gaussian mixture with EDM (see toy.py)."""
from configs.edm import toy


def get_config():
  return toy.get_config('gaussian_mixture')
