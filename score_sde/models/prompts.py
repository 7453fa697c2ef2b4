"""Prompts -> contexts for a context-conditional network (Stable Diffusion's text path).

    ids     = tokenize(prompt)                      (P, L)   CLIP BPE, padded to the UNet's L
    context = CLIPTextModel(ids).last_hidden_state  (P, L, D) what the UNet cross-attends to
    null    = the same for the empty prompt          (1, L, D) classifier-free guidance's null

The tokenizer (vocab.json + merges.txt) and the text encoder (transformers' config.json +
model.safetensors) are the folders ``config.text.tokenizer`` and ``config.text.encoder``. A model
trained here on captions (``data.context='captions'``, no ``config.text.encoder``) reads
prompts as it read its captions: word contexts over the captions' vocabulary, whose empty
prompt is the zero null context (``datasets.captions``). Bad
prompts fail before any file is read: an empty prompt (it is the null context itself) and a
prompt for a model that takes no context. A prompt longer than the encoder's context is
truncated, as Stable Diffusion's pipelines do, with one line naming what was dropped.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import jax
import numpy as np

from score_sde import reporting
from score_sde.errors import ConfigError, DataError
from score_sde.models import convert_clip, tokenizer, unclip
from score_sde.models import utils as mutils


def check_prompts(prompts: Sequence[str], model) -> list[str]:
  """The prompts, or a one-line error: none, an empty one, or a model without a context."""
  prompts = list(prompts)
  if not prompts:
    raise DataError('Give at least one prompt.')
  for i, prompt in enumerate(prompts):
    if not prompt.strip():
      raise DataError(f'Prompt {i + 1} is empty: the empty prompt is the null context that '
                      'guidance steers away from; describe the picture (for unconditional '
                      'samples give any prompt and sampling.guidance_scale=-1).')
  if mutils.context_shape(model) is None:
    raise ConfigError("--prompt conditions a text-conditional model (model.name="
                      "'unet_condition', or 'ncsnpp' / 'dit' with model.context_dim); this model "
                      f"({type(getattr(model, 'net', model)).__name__}) cross-attends to no "
                      'context.')
  return prompts


_TEXT_FOLDERS = {  # config.text key: (what it holds, the folder of a Stable Diffusion repository)
    'encoder': ('the CLIP text encoder (config.json + model.safetensors)', 'text_encoder/'),
    'tokenizer': ('the CLIP tokenizer (vocab.json + merges.txt)', 'tokenizer/')}


def check_text_config(config) -> None:
  """ConfigError unless ``config.text`` names both folders."""
  for key, (what, folder) in _TEXT_FOLDERS.items():
    if not config.text.get(key):
      raise ConfigError(f'--prompt needs config.text.{key}: the folder of {what}, e.g. '
                        f'{folder} of a Stable Diffusion 1.x repository.')


def get_encoder(config, model) -> Callable[[Sequence[str]], np.ndarray]:
  """``encode(prompts) -> (P, L, D)`` contexts for ``model`` (a context-conditional network)
  from ``config.text``'s tokenizer and text encoder, checked against the model's (L, D)."""
  check_text_config(config)
  length, dim = mutils.context_shape(model)
  tok = tokenizer.CLIPTokenizer.from_folder(config.text.tokenizer, context_length=length)
  encoder, params = convert_clip.load(config.text.encoder)
  if encoder.hidden_size != dim:
    raise ConfigError(f'The text encoder of config.text.encoder={config.text.encoder!r} gives '
                      f'{encoder.hidden_size}-d states; the model cross-attends to {dim}-d ones '
                      '(model.context_dim).')
  if encoder.max_position_embeddings < length:
    raise ConfigError(f'The text encoder reads at most {encoder.max_position_embeddings} tokens; '
                      f'the model cross-attends to {length} (model.context_length).')
  states = jax.jit(lambda p, ids: encoder.apply({'params': p}, ids)[0])

  def encode(prompts: Sequence[str]) -> np.ndarray:
    room = length - 2
    for prompt in prompts:
      n = len(tok.token_ids(prompt))
      if n > room:
        reporting.say(f'Prompt {prompt[:40]!r}... has {n} tokens; the text encoder reads '
                      f'{room}: truncated, the last {n - room} dropped.')
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')   # said above, in one line
      ids = tok.tokenize(list(prompts))
    return np.asarray(states(params, ids), np.float32)
  return encode


def word_encoder(config, model) -> Callable[[Sequence[str]], np.ndarray]:
  """``encode(prompts) -> (P, L, V)`` word contexts of a model trained on captions."""
  from score_sde.datasets import captions, contexts as data_contexts
  length = mutils.context_shape(model)[0]
  vocabulary = data_contexts.vocabulary(config)
  return lambda prompts: captions.word_contexts(prompts, vocabulary, length, what='Prompt')


def embedding_encoder(config, model) -> Callable[[Sequence[str]], np.ndarray]:
  """``encode(prompts) -> (P, 1, D)``: the text embeddings of the contrastive pair trained in
  ``config.contrastive.workdir``, for a model conditioned on them (unCLIP's prior)."""
  from score_sde.checkpointing import contrastive as ckpt_contrastive
  trained = ckpt_contrastive.load_pair(config.contrastive.workdir)
  shape = mutils.context_shape(model)
  if shape != (1, trained.embed_dim):
    raise ConfigError(f'The contrastive pair of config.contrastive.workdir='
                      f'{config.contrastive.workdir!r} embeds prompts in {trained.embed_dim}-d; '
                      f'the model reads {shape} contexts (model.context_length, '
                      'model.context_dim).')
  return lambda prompts: trained.encode_text(prompts)[:, None]


def contexts(config, model, prompts: Sequence[str]) -> dict[str, np.ndarray]:
  """{'context': (P, L, D), 'null_context': (1, L, D)}: the prompts' and the empty prompt's
  (a model conditioned on a contrastive pair's embeddings: the zero null context its training
  dropout used)."""
  prompts = check_prompts(prompts, model)
  if isinstance(getattr(model, 'net', model), unclip.UnCLIPDecoder):
    raise ConfigError('The unCLIP decoder reads image embeddings, not prompts: generate them '
                      "from the prompts with the prior's run (score_sde.unclip.text_to_image).")
  if config.contrastive.get('workdir'):
    encode = embedding_encoder(config, model)
    found = encode(prompts)
    return {'context': found, 'null_context': np.zeros_like(found[:1])}
  if not config.text.get('encoder') and config.data.get('context') == 'captions':
    encode = word_encoder(config, model)
  else:
    encode = get_encoder(config, model)
  return {'context': encode(prompts), 'null_context': encode([''])}
