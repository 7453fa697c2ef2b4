"""DDPM++ (cont.) on CIFAR-10 the EDM way (Karras et al. 2022): the sigma process from 0.002 to
80, the preconditioned network and loss (ln sigma ~ N(-1.2, 1.2^2)), Heun with 18 steps."""
from configs import edm
from configs.vp import cifar10_ddpmpp_continuous


def get_config():
  return edm.on_images(cifar10_ddpmpp_continuous.get_config())
