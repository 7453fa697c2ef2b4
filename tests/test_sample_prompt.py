"""``sample.py --prompt`` end to end on tiny random weights, without torch: the test writes a
diffusers UNet and autoencoder, a transformers CLIP text encoder (safetensors + config.json, with
numpy) and a CLIP vocabulary; our converters read them; a picture per prompt comes out. Then the
bad inputs, each one line before any work."""
import json
import re

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from configs.text import tiny
from score_sde import models
from score_sde.models import (autoencoder, convert_autoencoder, convert_clip, convert_unet,
                              text_encoder, torch_weights, unet_condition)
from tests.helpers import random_params, run_entry_point



def vocabulary(words):
  """A CLIP vocab and merges spelling each word left to right: 'seven' is s+e, se+v, ..."""
  vocab, merges = ['<|startoftext|>', '<|endoftext|>'], []
  for word in words:
    pieces = list(word[:-1]) + [word[-1] + '</w>']
    vocab += [p for p in pieces if p not in vocab]
    token = pieces[0]
    for piece in pieces[1:]:
      merges.append(f'{token} {piece}')
      token += piece
      vocab += [token] if token not in vocab else []
  return {v: i for i, v in enumerate(vocab)}, merges


VOCAB, MERGES = vocabulary(['a', 'thick', 'seven', 'thin', 'one'])
CLIP = dict(vocab_size=len(VOCAB), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=8, eos_token_id=1)
VAE = dict(in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=1,
           latent_channels=2, norm_num_groups=4, scaling_factor=0.5,
           down_block_types=['DownEncoderBlock2D'] * 2, up_block_types=['UpDecoderBlock2D'] * 2)


def _write(folder, weights_file, state, config=None):
  folder.mkdir()
  save_file(state, str(folder / weights_file))
  if config is not None:
    (folder / 'config.json').write_text(json.dumps(config))
  return str(folder)


def _state(shapes, seed):
  return torch_weights.params_to_state_dict(random_params(shapes, seed))


@pytest.fixture(scope='module')
def sd(tmp_path_factory):
  """Folders of a tiny Stable Diffusion: unet/, vae/, text_encoder/, tokenizer/; and flags."""
  root = tmp_path_factory.mktemp('tiny_sd')
  (root / 'tokenizer').mkdir()
  (root / 'tokenizer' / 'vocab.json').write_text(json.dumps(VOCAB))
  (root / 'tokenizer' / 'merges.txt').write_text('#version: 0.2\n' + '\n'.join(MERGES) + '\n')
  clip = text_encoder.from_hf_config(CLIP)
  encoder = _write(root / 'text_encoder', convert_clip.WEIGHTS_FILE,
                   _state(text_encoder.param_shapes(clip), 1), CLIP)
  vae = autoencoder.AutoencoderKL(**convert_autoencoder.fields_from_diffusers(VAE))
  vae = _write(root / 'vae', convert_autoencoder.WEIGHTS_FILE,
               _state(convert_autoencoder.param_shapes(vae), 2), VAE)
  config = tiny.get_config()
  config.data.latents, config.data.latent_size, config.data.latent_channels = vae, 8, 2
  unet = models.get_model(config)
  unet = _write(root / 'unet', convert_unet.WEIGHTS_FILE, convert_unet.to_diffusers_names(
      _state(unet_condition.param_shapes(unet, 8), 3)))
  flags = ['--config=configs/text/tiny.py', f'--workdir={root / "run"}',
           f'--config.data.latents={vae}', '--config.data.latent_size=8',
           '--config.data.latent_channels=2', f'--config.text.encoder={encoder}',
           f'--config.text.tokenizer={root / "tokenizer"}']
  return root, unet, flags


def test_prompts_give_a_picture_per_prompt_and_long_ones_are_truncated(sd, capsys):
  root, unet, flags = sd
  long = 'a thick seven ' * 3   # 9 tokens: the encoder reads 8 - 2
  rc = run_entry_point('sample.py', *flags, f'--unet_weights={unet}', '--prompt=a thick seven',
                       f'--prompt={long}', '--num_samples=4', f'--outdir={root / "out"}')
  out, err = capsys.readouterr()
  assert rc == 0, err
  assert "has 9 tokens; the text encoder reads 6: truncated, the last 3 dropped." in out
  stem = root / 'out' / 'conditional_step0_dpm_solver_prompt-w2_nfe2_seed0'
  with np.load(f'{stem}.npz') as f:
    assert f['samples'].shape == (4, 16, 16, 1) and np.all(np.isfinite(f['samples']))
    assert list(f['prompts']) == ['a thick seven', long]
    np.testing.assert_array_equal(f['prompt_index'], [0, 1, 0, 1])
  assert (root / 'out' / f'{stem.name}.png').stat().st_size > 0


@pytest.mark.parametrize('args, message', [
    (['--prompt= '], 'Prompt 1 is empty: the empty prompt is the null context'),
    (['--prompt=a seven', '--labels=7'], 'Give either --labels or --prompt'),
    (['--prompt=a seven', '--config.model.unet_channels=(8,8)'],
     r'unet does not fit this architecture: 2 unexpected \(down_blocks.1.resnets.0.conv_shortcut'),
    (['--prompt=a seven', '--config.text.encoder='], '--prompt needs config.text.encoder'),
])
def test_bad_prompts_and_weights_are_one_line(sd, capsys, args, message):
  root, unet, flags = sd
  rc = run_entry_point('sample.py', *flags, f'--unet_weights={unet}', *args,
                       f'--outdir={root / "bad"}')
  err = capsys.readouterr().err.strip()
  assert rc != 0 and len(err.splitlines()) == 1, err
  assert re.search(message, err), err


def test_a_prompt_for_an_unconditional_model_is_one_line(tmp_path, capsys):
  rc = run_entry_point('sample.py', '--config=configs/vp/digits_ddpmpp_continuous.py',
                       f'--workdir={tmp_path}', '--prompt=a seven')
  err = capsys.readouterr().err.strip()
  assert rc != 0 and err == ("Error: --prompt conditions a text-conditional model (model.name="
                             "'unet_condition', or 'ncsnpp' / 'dit' with model.context_dim); "
                             'this model (NCSNpp) cross-attends to no context.'), err
