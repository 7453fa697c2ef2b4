"""Score networks. ``get_model(config)`` builds the one named by ``config.model.name``.

Every model is a Flax Linen module called as ``model.apply({'params': p}, x, labels, train=...)``
(with ``rngs={'dropout': key}`` when training with dropout); ``labels`` are the (B,) noise
conditioning from ``models.utils`` and the output has x's shape. Each model module exposes
``from_config(config)``, which alone reads the config and passes typed keyword arguments.
Context-conditional networks (``unet_condition``, and ``ncsnpp`` / ``dit`` with
``model.context_dim``: cross-attention to a sequence of embeddings, e.g. a text encoder's states)
also take ``context`` (B, L, D); ``utils.context_shape`` says which.
With ``data.latents`` the network is built for the latents: ``from_config`` sees the config's
``latent_view`` (image size and channels replaced by the latent's).
"""
from __future__ import annotations

from score_sde.errors import ConfigError
from score_sde.datasets import latents
from score_sde.models import ddpm, dit, mlp, ncsnpp, ncsnv2, unclip, unet_condition

MODELS = {
    'mlp': mlp.from_config,
    'ncsnpp': ncsnpp.from_config,
    'ddpm': ddpm.from_config,
    'ncsnv2_64': ncsnv2.from_config,
    'ncsnv2_128': ncsnv2.from_config,
    'ncsnv2_256': ncsnv2.from_config,
    'dit': dit.from_config,
    'unet_condition': unet_condition.from_config,   # Stable Diffusion's, diffusers' layout
    'unclip_decoder': unclip.decoder_from_config,   # the UNet driven by an image embedding
}

# Models with a class embedding (model.class_conditional).
CLASS_CONDITIONAL_MODELS = ('mlp', 'ncsnpp', 'ddpm', 'dit')


def _check_class_conditional(config):
  if not config.model.get('class_conditional', False):
    return
  if config.model.name not in CLASS_CONDITIONAL_MODELS:
    raise ConfigError(f'model.class_conditional is available for models '
                      f'{list(CLASS_CONDITIONAL_MODELS)}, not {config.model.name!r}.')
  num_classes = config.data.num_classes
  if num_classes is None or num_classes < 1:
    raise ConfigError(f'model.class_conditional needs data.num_classes >= 1, got {num_classes}.')


def get_model(config):
  name = config.model.name
  if name not in MODELS:
    raise ConfigError(f'Unknown model {name!r}; valid: {sorted(MODELS)}.')
  _check_class_conditional(config)
  return MODELS[name](latents.latent_view(config))
