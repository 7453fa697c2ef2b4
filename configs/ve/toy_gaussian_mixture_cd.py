"""gaussian mixture, VE SDE: a consistency model distilled from a trained score model of the
same SDE (``--config.training.teacher_workdir=<its workdir>``), drawn in 1-2 steps."""
from configs.ve import toy_gaussian_mixture_ct


def get_config():
  config = toy_gaussian_mixture_ct.get_config()
  config.training.objective = 'cd'
  return config
