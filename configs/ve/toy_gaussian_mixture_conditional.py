"""gaussian mixture, class-conditional (labels: component k has class k mod 2), with the VE SDE.

One network gives s(x, t, y) and, through label dropout, s(x, t): sample with classifier-free
guidance via sample.py --labels=0,1 --config.sampling.guidance_scale=2.
"""
from configs.ve import toy_gaussian_mixture


def get_config():
  config = toy_gaussian_mixture.get_config()
  config.data.num_classes = 2
  config.model.class_conditional = True
  config.training.label_dropout = 0.1
  return config
