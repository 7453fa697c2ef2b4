"""DDPM++ (cont., small) on the digits with the VP SDE: `make demo-digits`."""
from configs import default_digits


def get_config():
  config = default_digits.get_default_configs()
  config.training.sde = 'vpsde'
  model = config.model
  model.fir = False
  model.progressive_input = 'none'
  model.embedding_type = 'positional'
  return config
