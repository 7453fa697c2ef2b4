"""Our CLIP text encoder and tokenizer against transformers' ``CLIPTextModel`` / ``CLIPTokenizer``.

Run in the verification environment (torch + transformers), nothing downloaded:

    PYTHONPATH=. /work/torchenv/bin/python benchmarks/text_encoder_reference.py

1. Tokenizer: a small byte-level BPE with CLIP's conventions (``</w>`` word ends, start/end
   tokens) is trained here with ``tokenizers`` on a few sentences and saved as vocab.json /
   merges.txt; transformers' CLIPTokenizer and ours read those files and must give the same ids
   (padding to 77 with the end token, truncation of a long prompt).
2. Model: random-weight ``CLIPTextModel`` (tiny and SD-1.x sizes; every parameter, biases and
   norms included, drawn at random) -> ``save_pretrained`` (config.json + model.safetensors) ->
   ``convert_clip.load`` -> same ``last_hidden_state`` and pooled output, max relative error
   max|ours - theirs| / max|theirs|, asserted <= 1e-4.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

# The verification venv's torchvision does not load with its torch ("operator torchvision::nms
# does not exist"); transformers imports it only for image processors.
sys.modules.setdefault('torchvision', None)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402

from score_sde.models import convert_clip, tokenizer as clip_tokenizer  # noqa: E402

CORPUS = [
    'a photograph of an astronaut riding a horse', 'a thick, slanted seven',
    'A thin upright ONE written in ink', "it's a cat's toy; they're 3 dogs & 12 birds!",
    'an oil painting of the sea at night, 4k, trending', 'zwei Bären im Schnee', 'naïve café',
]
PROMPTS = CORPUS + [
    '', '   many    spaces\tand\nnewlines  ', 'unseen wordz like qxj', '7 8 9 0 1 2',
    'emoji 🙂 and symbols #@!', ' '.join(['a long prompt'] * 40),
]
SIZES = {
    'tiny': dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, hidden_act='quick_gelu'),
    'sd1': dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act='quick_gelu',
                bos_token_id=0, eos_token_id=2, pad_token_id=1),
}


def make_vocab(folder: str) -> None:
  """A tiny CLIP-style vocab.json / merges.txt, trained here."""
  tok = Tokenizer(models.BPE(continuing_subword_prefix='', end_of_word_suffix='</w>'))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(
      vocab_size=400, end_of_word_suffix='</w>', show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      special_tokens=[clip_tokenizer.BOS, clip_tokenizer.EOS])
  tok.train_from_iterator([p.lower() for p in CORPUS] * 20, trainer)
  tok.model.save(folder)


def check_tokenizer(folder: str) -> int:
  ours = clip_tokenizer.CLIPTokenizer(os.path.join(folder, 'vocab.json'),
                                      os.path.join(folder, 'merges.txt'))
  theirs = transformers.CLIPTokenizer(vocab=os.path.join(folder, 'vocab.json'),
                                      merges=os.path.join(folder, 'merges.txt'))
  expected = theirs(PROMPTS, padding='max_length', max_length=77, truncation=True)['input_ids']
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    got = ours.tokenize(PROMPTS)
  np.testing.assert_array_equal(got, np.asarray(expected))
  assert len(caught) == 1 and 'dropped' in str(caught[0].message), caught
  print(f'tokenizer: {len(PROMPTS)} prompts, identical ids (vocab {ours.backend.get_vocab_size()}'
        f'); truncation warning: {caught[0].message}')
  return ours.backend.get_vocab_size()


def randomize(model: torch.nn.Module) -> None:
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.ndim == 1 else 0.05) +
              (1.0 if p.ndim == 1 and p.shape[0] == model.config.hidden_size else 0.0))


def check_model(name: str, fields: dict, folder: str, ids: np.ndarray) -> None:
  config = transformers.CLIPTextConfig(**fields)
  torch_model = transformers.CLIPTextModel(config).eval()
  randomize(torch_model)
  path = os.path.join(folder, name)
  torch_model.save_pretrained(path, safe_serialization=True)
  model, params = convert_clip.load(path)
  with torch.no_grad():
    out = torch_model(input_ids=torch.from_numpy(ids).long())
  start = time.perf_counter()
  hidden, pooled = jax.jit(lambda p, i: model.apply({'params': p}, i))(params, ids)
  hidden.block_until_ready()
  seconds = time.perf_counter() - start
  count = sum(x.size for x in jax.tree.leaves(params))
  for what, a, b in (('last_hidden_state', hidden, out.last_hidden_state),
                     ('pooled', pooled, out.pooler_output)):
    b = b.numpy()
    rel = float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())
    print(f'{name}: {what} {tuple(b.shape)} max rel err {rel:.2e} '
          f'(params {count:,}; eos_token_id {config.eos_token_id}; jit+run {seconds:.1f}s)')
    assert rel <= 1e-4, (name, what, rel)


def main():
  print(f'transformers {transformers.__version__}, torch {torch.__version__}, jax {jax.__version__}')
  with tempfile.TemporaryDirectory() as folder:
    make_vocab(folder)
    vocab_size = check_tokenizer(folder)
    tok = clip_tokenizer.CLIPTokenizer(os.path.join(folder, 'vocab.json'),
                                       os.path.join(folder, 'merges.txt'))
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      tiny_ids = tok.tokenize(PROMPTS[:6])
    check_model('tiny', {**SIZES['tiny'], 'vocab_size': vocab_size,
                         'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id,
                         'pad_token_id': tok.pad_id}, folder, tiny_ids)
    # SD-1.x ids: start 49406, words, end 49407 (the largest id, pooled by argmax), end-padded.
    rng = np.random.default_rng(0)
    sd_ids = np.full((2, 77), 49407, np.int64)
    for row, n in enumerate((5, 30)):
      sd_ids[row, 0], sd_ids[row, 1:n + 1] = 49406, rng.integers(0, 49406, n)
    check_model('sd1', SIZES['sd1'], folder, sd_ids)


if __name__ == '__main__':
  main()
