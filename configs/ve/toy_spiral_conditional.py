"""spiral, class-conditional (labels: the spiral's arm), with the VE SDE."""
from configs import default_toy
from configs.ve import toy_spiral


def get_config():
  return default_toy.conditional(toy_spiral.get_config())
