"""CLIP's byte-level BPE tokenizer through the ``tokenizers`` library, built from the
``vocab.json`` / ``merges.txt`` that ship with the weights (nothing is downloaded).

    text -> NFC, runs of whitespace -> ' ', lowercase
         -> pieces: 's 't 're 've 'm 'll 'd | letters+ | one digit | other non-space symbols+
         -> byte-level BPE per piece, '</w>' closing each word
    ids  =  [<|startoftext|>] + tokens[:context - 2] + [<|endoftext|>] + [pad] * rest   (context,)

A prompt whose tokens do not fit the context (77 for Stable Diffusion) is truncated, keeping the
end token, with a warning naming how many tokens were dropped. The empty prompt is
``[<|startoftext|>, <|endoftext|>, pad...]``: Stable Diffusion's null context for guidance.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Sequence

import numpy as np

from score_sde.errors import DataError, MissingDependencyError, MissingFileError

BOS, EOS = '<|startoftext|>', '<|endoftext|>'
# Words, contractions, single digits and runs of other symbols (CLIP's own pattern).
_PIECES = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
           r"""[^\s\p{L}\p{N}]+""")
HOW_TO_GET = ('the vocab.json and merges.txt of the CLIP tokenizer ship with the weights '
              '(e.g. the tokenizer/ folder of a Stable Diffusion 1.x repository).')


def _backend(vocab_file: str, merges_file: str):
  try:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
  except ImportError as e:
    raise MissingDependencyError('CLIP tokenization needs the tokenizers package: '
                                 '`pip install tokenizers`.') from e
  for path in (vocab_file, merges_file):
    if not os.path.isfile(path):
      raise MissingFileError(f'{path!r} does not exist; {HOW_TO_GET}')
  vocab, merges = models.BPE.read_file(vocab_file, merges_file)
  tok = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix='',
                             end_of_word_suffix='</w>', unk_token=EOS, fuse_unk=False))
  tok.normalizer = normalizers.Sequence([
      normalizers.NFC(), normalizers.Replace(Regex(r'\s+'), ' '), normalizers.Lowercase()])
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(_PIECES), behavior='removed', invert=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False)])
  tok.add_special_tokens([BOS, EOS])
  return tok


class CLIPTokenizer:
  """``tokenize(prompts) -> (B, context_length) int32`` ids for ``text_encoder.CLIPTextModel``."""

  def __init__(self, vocab_file: str, merges_file: str, context_length: int = 77,
               pad_token: str = EOS):
    self.backend = _backend(vocab_file, merges_file)
    self.context_length = context_length
    ids = {name: self.backend.token_to_id(name) for name in (BOS, EOS, pad_token)}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
      raise DataError(f'{vocab_file!r} has no {", ".join(missing)} token; {HOW_TO_GET}')
    self.bos_id, self.eos_id, self.pad_id = ids[BOS], ids[EOS], ids[pad_token]

  @classmethod
  def from_folder(cls, folder: str, context_length: int | None = None) -> 'CLIPTokenizer':
    """A folder with vocab.json, merges.txt and optionally transformers' tokenizer_config.json
    (its ``pad_token`` and ``model_max_length`` are used: SD 2.x pads with '!')."""
    settings = {}
    config_file = os.path.join(folder, 'tokenizer_config.json')
    if os.path.isfile(config_file):
      with open(config_file) as f:
        settings = json.load(f)
    pad = settings.get('pad_token', EOS)
    pad = pad.get('content', EOS) if isinstance(pad, dict) else pad
    length = context_length or min(int(settings.get('model_max_length', 77)), 77)
    return cls(os.path.join(folder, 'vocab.json'), os.path.join(folder, 'merges.txt'),
               context_length=length, pad_token=pad)

  def token_ids(self, prompt: str) -> list[int]:
    """The BPE ids of ``prompt`` without start, end or padding."""
    return self.backend.encode(prompt, add_special_tokens=False).ids

  def tokenize(self, prompts: str | Sequence[str]) -> np.ndarray:
    """Prompts -> (B, context_length) int32; too-long prompts are truncated with a warning."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    room = self.context_length - 2
    out = np.full((len(prompts), self.context_length), self.pad_id, np.int32)
    for row, prompt in enumerate(prompts):
      tokens = self.token_ids(prompt)
      if len(tokens) > room:
        warnings.warn(f'Prompt {prompt[:40]!r}... has {len(tokens)} tokens; the text encoder '
                      f'reads {room}: the last {len(tokens) - room} are dropped.', stacklevel=2)
        tokens = tokens[:room]
      out[row, :len(tokens) + 2] = [self.bos_id, *tokens, self.eos_id]
    return out
