"""Score networks. ``get_model(config)`` builds the one named by ``config.model.name``.

Every model is a Flax Linen module called as ``model.apply({'params': p}, x, labels, train=...)``
(with ``rngs={'dropout': key}`` when training with dropout); ``labels`` are the (B,) noise
conditioning from ``models.utils`` and the output has x's shape. Each model module exposes
``from_config(config)``, which alone reads the config and passes typed keyword arguments.
"""
from __future__ import annotations

from score_sde.models import ddpm, mlp, ncsnpp, ncsnv2

MODELS = {
    'mlp': mlp.from_config,
    'ncsnpp': ncsnpp.from_config,
    'ddpm': ddpm.from_config,
    'ncsnv2_64': ncsnv2.from_config,
    'ncsnv2_128': ncsnv2.from_config,
    'ncsnv2_256': ncsnv2.from_config,
}


def get_model(config):
  name = config.model.name
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; valid: {sorted(MODELS)}.')
  return MODELS[name](config)
