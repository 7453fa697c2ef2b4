"""DDPM++ (cont., small) on the digits with EDM's sigma process, preconditioning and loss
(log-normal sigma, EDM weighting), sampled by EDM's Heun with 18 steps (35 NFE)."""
from configs import edm
from configs.vp import digits_ddpmpp_continuous


def get_config():
  return edm.on_images(digits_ddpmpp_continuous.get_config())
