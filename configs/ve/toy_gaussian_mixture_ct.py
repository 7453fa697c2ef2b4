"""gaussian mixture, VE SDE: a consistency model trained from scratch (iCT), drawn in 1-2 steps."""
from configs.ve import toy_gaussian_mixture


def get_config():
  config = toy_gaussian_mixture.get_config()
  config.training.objective = 'ct'
  # EDM's preconditioning: with the consistency function's DDIM jump f = D + (sigma_min / sigma)
  # (y - D) the network sees unit-scaled inputs and its output enters with the consistency
  # models' c_out at every level (score_sde/consistency.py). Read as a score instead, D = x +
  # sigma^2 s multiplies the network's errors by sigma^2 = 100 at sigma_max.
  config.model.precond = 'edm'
  # iCT's pseudo-Huber c is sized for images; in 2-D it is an L1 distance (consistency.METRICS).
  config.training.consistency_metric = 'l2'
  config.optim.lr = 1e-3
  config.optim.decay = 'cosine'   # the last iterates of a short run carry little optimizer noise
  config.sampling.method = 'few_step'
  config.sampling.num_steps = 2
  # 2 steps re-noise at the log-SNR grid's middle, sigma 0.32 (the Karras grid's is 0.72):
  # at 0.17-0.3 the exact-score CD student is at the noise floor (benchmarks/RESULTS.md).
  config.sampling.time_schedule = 'logsnr'
  return config
