"""CLIP text encoder, tokenizer and converter (transformers' layout; no torch here: the
comparison with transformers is benchmarks/text_encoder_reference.py)."""
import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from score_sde.errors import DataError
from score_sde.models import convert_clip, text_encoder, tokenizer, torch_weights

VOCAB = {'<|startoftext|>': 0, '<|endoftext|>': 1, 'a</w>': 2, 'c': 3, 'a': 4, 't</w>': 5,
         'at</w>': 6, 'cat</w>': 7, '7</w>': 8, ',</w>': 9}
MERGES = ['a t</w>', 'c at</w>']


@pytest.fixture
def vocab_folder(tmp_path):
  (tmp_path / 'vocab.json').write_text(json.dumps(VOCAB))
  (tmp_path / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(MERGES) + '\n')
  return str(tmp_path)


def test_tokenizer_lowercases_merges_pads_and_truncates_with_a_warning(vocab_folder):
  tok = tokenizer.CLIPTokenizer.from_folder(vocab_folder, context_length=6)
  ids = tok.tokenize(['A \t CAT,7', ''])
  np.testing.assert_array_equal(ids, [[0, 2, 7, 9, 8, 1], [0, 1, 1, 1, 1, 1]])
  with pytest.warns(UserWarning, match='the last 2 are dropped'):
    np.testing.assert_array_equal(tok.tokenize('a a a a a a'), [[0, 2, 2, 2, 2, 1]])


def _tiny(**overrides):
  return text_encoder.from_preset('tiny', vocab_size=len(VOCAB), max_position_embeddings=8,
                                  eos_token_id=1, **overrides)


def test_converted_safetensors_round_trip_and_causal_pooling(tmp_path):
  model = _tiny()
  ids = jnp.array([[0, 2, 7, 1, 1, 1], [0, 7, 7, 8, 9, 1]])
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: 0.2 * rng.standard_normal(s.shape).astype(np.float32),
                        text_encoder.param_shapes(model))
  # transformers 5 saves without the text_model. prefix; the published files have it.
  state = {k.removeprefix('text_model.'): v
           for k, v in torch_weights.params_to_state_dict(params).items()}
  save_file(state, str(tmp_path / convert_clip.WEIGHTS_FILE))
  (tmp_path / convert_clip.CONFIG_FILE).write_text(json.dumps(dict(
      vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, max_position_embeddings=8, eos_token_id=1, dropout=0.0)))
  loaded_model, loaded = convert_clip.load(str(tmp_path))
  assert loaded_model == model
  apply = jax.jit(lambda p, i: model.apply({'params': p}, i))
  hidden, pooled = apply(params, ids)
  hidden2, _ = apply(loaded, ids)
  np.testing.assert_allclose(hidden2, hidden, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(pooled, hidden[jnp.arange(2), jnp.array([3, 5])], rtol=1e-6)
  # Causal: states before a changed token do not move.
  changed, _ = apply(params, ids.at[:, 4].set(2))
  np.testing.assert_allclose(changed[:, :4], hidden[:, :4], rtol=1e-6, atol=1e-6)


def test_a_file_of_another_architecture_names_its_keys():
  shapes = flax.traverse_util.flatten_dict(text_encoder.param_shapes(_tiny(num_layers=3)))
  state = {torch_weights.torch_key(path): np.zeros(1) for path in shapes}
  with pytest.raises(DataError, match=r'1[26] unexpected \(text_model.encoder.layers.2'):
    convert_clip.convert_state_dict(state, _tiny(), what='clip.safetensors')


def test_sd1_text_encoder_parameter_count():
  shapes = text_encoder.param_shapes(text_encoder.from_preset('sd1'))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 123_060_480
