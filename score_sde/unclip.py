"""unCLIP's two sampling routes (Ramesh et al. 2022, DALL-E 2) over trained runs
(``score_sde.load``) and a contrastive pair (``checkpointing.contrastive.load_pair``):

    text_to_image   prompt --pair's text encoder--> u (1, D)
                    e ~ prior  p(e | u)              (guidance w_prior against the zero context)
                    e <- e / ||e||                   (the prior learns sqrt(D) e; back onto the sphere)
                    x ~ decoder p(x | e)             (guidance w_decoder against e = 0)
    variations      e = pair's image encoder(x_source);  x ~ decoder p(x | e), new noise

Both return ``api.Samples`` of the decoder (images (n, H, W, C) in [0, 1]).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from score_sde import api, datasets
from score_sde.errors import ConfigError, DataError
from score_sde.models import contrastive
from score_sde.models import unclip as unclip_models
from score_sde.models import utils as mutils


def embedding_dim(decoder: api.Run) -> int:
  """D of the image embeddings ``decoder`` reads; a one-line ConfigError for a run that is
  not an unCLIP decoder."""
  net = getattr(decoder.model, 'net', decoder.model)
  if not isinstance(net, unclip_models.UnCLIPDecoder):
    raise ConfigError(f"Image embeddings drive an unCLIP decoder (model.name='unclip_decoder'); "
                      f"the run in {decoder.workdir} is model {decoder.config.model.name!r}.")
  return mutils.context_shape(decoder.model)[1]


def check_embeddings(embeddings: np.ndarray, decoder: api.Run, what: str) -> np.ndarray:
  """(N, D) embeddings as the decoder's (N, 1, D) contexts; DataError naming both dimensions
  when they differ."""
  dim = embedding_dim(decoder)
  embeddings = np.asarray(embeddings, np.float32)
  if embeddings.ndim != 2 or embeddings.shape[1] != dim:
    raise DataError(f'{what} gives {embeddings.shape[1:]} embeddings; the decoder in '
                    f'{decoder.workdir} reads {dim}-d ones (model.context_dim).')
  return embeddings[:, None]


def variations(decoder: api.Run, pair: contrastive.TrainedPair, images: np.ndarray,
               per_image: int = 4, *, seed: int = 0, **settings) -> api.Samples:
  """``per_image`` decodings of each source image (N, H, W, C) in [0, 1]: sample i * per_image
  + j is variation j of source i. ``settings``: ``Run.sample``'s (e.g. ``guidance_scale=1``)."""
  embedding_dim(decoder)   # a run that is no decoder fails before any work
  images = np.asarray(images, np.float32)
  scaled = datasets.get_data_scaler(decoder.config)(images)
  e = check_embeddings(pair.encode_images(scaled), decoder,
                       f'The contrastive pair ({pair.embed_dim}-d)')
  return decoder.sample(len(images) * per_image, contexts=np.repeat(e, per_image, axis=0),
                        seed=seed, show_progress=False, **settings)


def prior_embeddings(prior: api.Run, prompts: Sequence[str], n: int, *, seed: int = 0,
                     guidance_scale: float = 0.0) -> np.ndarray:
  """(n, D) unit image embeddings from ``prior`` (prompts cycled over n)."""
  found = prior.sample(n, prompts=list(prompts), seed=seed, show_progress=False,
                       guidance_scale=guidance_scale).images
  return np.asarray(contrastive.normalize(found))   # the prior learns sqrt(D) e


def text_to_image(prior: api.Run, decoder: api.Run, prompts: Sequence[str], n: int, *,
                  seed: int = 0, prior_guidance: float = 0.0,
                  decoder_guidance: float = 0.0) -> api.Samples:
  """``n`` images for ``prompts`` (cycled: sample i answers prompt i mod P) through the prior
  and the decoder, each guided at its own scale."""
  e = prior_embeddings(prior, prompts, n, seed=seed, guidance_scale=prior_guidance)
  contexts = check_embeddings(e, decoder, f'The prior in {prior.workdir}')
  return decoder.sample(n, contexts=contexts, seed=seed + 1, show_progress=False,
                        guidance_scale=decoder_guidance)
