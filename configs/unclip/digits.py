"""unCLIP's decoder on the digits, and the contrastive pair whose image embeddings it reads.

The digits (16x16 grey) with their made captions ('a thick, slanted seven') train a CLIP-style
pair (``config.contrastive``: 32-d unit embeddings, 600 steps of batch 256) in
``runs/unclip``; its export ``runs/unclip/contrastive/image_embeddings.npz`` is this config's
``data.context`` ((N, 1, 32) per split):

  train.py --mode=train_contrastive --config=configs/unclip/digits.py --workdir=runs/unclip
  train.py --config=configs/unclip/digits.py --workdir=runs/unclip_decoder

The decoder is the text config's UNet (``configs/text/digits.py``) behind
``model.name='unclip_decoder'``: the embedding enters the time embedding and as
``model.unclip_tokens`` context tokens; 10% of embeddings dropped to the null (zero) embedding.
"""
from configs.text import digits as text_digits

CONTRASTIVE_WORKDIR = 'runs/unclip'


def get_config():
  config = text_digits.get_config()
  config.data.context = f'{CONTRASTIVE_WORKDIR}/contrastive/image_embeddings.npz'
  model = config.model
  model.name = 'unclip_decoder'
  model.context_length, model.context_dim = 1, config.contrastive.embed_dim
  return config
