"""spiral, class-conditional (labels: the spiral's arm), with the VE SDE.

One network gives s(x, t, y) and, through label dropout, s(x, t): sample with classifier-free
guidance via sample.py --labels=0,1 --config.sampling.guidance_scale=2.
"""
from configs.ve import toy_spiral


def get_config():
  config = toy_spiral.get_config()
  config.data.num_classes = 2
  config.model.class_conditional = True
  config.training.label_dropout = 0.1
  return config
