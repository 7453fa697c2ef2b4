"""spiral with rectified flow (see toy.py)."""
from configs.rf import toy


def get_config():
  return toy.get_config('spiral')
