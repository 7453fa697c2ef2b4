"""gaussian mixture, VE SDE: a consistency model distilled from a trained score model of the
same SDE (``--config.training.teacher_workdir=<its workdir>``), drawn in 1-2 steps."""
from configs.ve import toy_gaussian_mixture_ct


def get_config():
  config = toy_gaussian_mixture_ct.get_config()
  config.training.objective = 'cd'
  # Pairs (sigma, sigma / 4) at any level, the teacher solving between them in 4 Heun steps: a
  # chain from sigma_max to sigma_min has ~5 links for the student's errors to compound over,
  # not the 17 of an 18-point grid (benchmarks/RESULTS.md, "CD with the exact mixture score").
  config.training.consistency_ratio = 4.0
  config.training.teacher_substeps = 4
  return config
