"""Tiny NCSN++ of the 256-px configs (output_skip / input_skip pyramids)."""
from configs import tiny
from configs.ve import celebahq_256_ncsnpp_continuous


def get_config():
  return tiny.shrink(celebahq_256_ncsnpp_continuous.get_config())
