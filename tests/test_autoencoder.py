"""The KL autoencoder: diffusers' parameter layout, the safetensors converter and its errors, the
posterior, and the SD 1.x size pinned by its parameter count.

That the network computes diffusers' function is checked outside CI (it needs torch):
``benchmarks/autoencoder_reference.py``, results in ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from score_sde.errors import DataError, MissingFileError
from score_sde.models import autoencoder, convert_autoencoder, torch_weights

# diffusers 0.42 AutoencoderKL() with SD 1.x's config (block_out_channels (128, 256, 512, 512),
# layers_per_block 2, latent 4, 32 groups): sum(p.numel() for p in vae.parameters()).
SD1_NUM_PARAMS = 83_653_863

TINY = dict(in_channels=1, out_channels=1, block_out_channels=[8, 16], layers_per_block=1,
            latent_channels=2, norm_num_groups=4, scaling_factor=0.5,
            down_block_types=['DownEncoderBlock2D'] * 2, up_block_types=['UpDecoderBlock2D'] * 2,
            act_fn='silu', _class_name='AutoencoderKL')

# A few entries of the diffusers state dict of TINY, with their PyTorch shapes.
DIFFUSERS_KEYS = {
    'encoder.conv_in.weight': (8, 1, 3, 3),
    'encoder.down_blocks.0.downsamplers.0.conv.weight': (8, 8, 3, 3),
    'encoder.down_blocks.1.resnets.0.conv_shortcut.weight': (16, 8, 1, 1),
    'encoder.mid_block.attentions.0.to_out.0.weight': (16, 16),
    'encoder.mid_block.attentions.0.group_norm.weight': (16,),
    'encoder.conv_out.weight': (4, 16, 3, 3),
    'quant_conv.weight': (4, 4, 1, 1),
    'post_quant_conv.weight': (2, 2, 1, 1),
    'decoder.up_blocks.0.resnets.1.norm2.bias': (16,),
    'decoder.up_blocks.0.upsamplers.0.conv.weight': (16, 16, 3, 3),
    'decoder.up_blocks.1.resnets.0.conv_shortcut.weight': (8, 16, 1, 1),
    'decoder.conv_out.bias': (1,),
}


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
  """A diffusers-format folder (config.json + safetensors) of TINY with random weights."""
  model = autoencoder.AutoencoderKL(**convert_autoencoder.fields_from_diffusers(TINY))
  shapes = convert_autoencoder.param_shapes(model)
  rng = np.random.default_rng(0)
  state = {k: rng.standard_normal(v.shape).astype(np.float32)
           for k, v in torch_weights.params_to_state_dict(
               jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)).items()}
  folder = tmp_path_factory.mktemp('tiny_vae')
  save_file(state, str(folder / convert_autoencoder.WEIGHTS_FILE))
  (folder / convert_autoencoder.CONFIG_FILE).write_text(json.dumps(TINY))
  return folder, state


def test_diffusers_layout_and_round_trip(tiny_folder):
  folder, state = tiny_folder
  for key, shape in DIFFUSERS_KEYS.items():
    assert state[key].shape == shape, key
  model, params = convert_autoencoder.load(str(folder))
  back = torch_weights.params_to_state_dict(params)
  assert back.keys() == state.keys()
  assert all(np.array_equal(back[k], state[k]) for k in state)
  # Conv kernels go (O, I, kh, kw) -> (kh, kw, I, O), dense ones (O, I) -> (I, O).
  np.testing.assert_array_equal(params['encoder']['conv_in']['kernel'],
                                state['encoder.conv_in.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['encoder']['mid_block']['attentions_0']['to_q']['kernel'],
                                state['encoder.mid_block.attentions.0.to_q.weight'].T)
  assert model.scaling_factor == 0.5 and model.latent_channels == 2


def test_encode_decode_shapes_and_npz(tiny_folder, tmp_path):
  folder, _ = tiny_folder
  model, params = convert_autoencoder.load(str(folder / convert_autoencoder.WEIGHTS_FILE))
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 1)), jnp.float32)

  def run(params, x):
    moments = model.apply({'params': params}, x, method='encode')
    recon, posterior = model.apply({'params': params}, x, rng=jax.random.PRNGKey(0))
    z = model.apply({'params': params}, x, method='to_latents')
    return (moments, recon, posterior.kl(), z,
            model.apply({'params': params}, z, method='from_latents'),
            model.apply({'params': params}, z / 0.5, method='decode'))

  moments, recon, kl, z, from_z, decoded = jax.jit(run)(params, x)
  assert moments.shape == (2, 4, 4, 4) and model.latent_shape((8, 8)) == (4, 4, 2)
  assert recon.shape == x.shape and kl.shape == (2,)
  # to_latents / from_latents: the scale factor and its inverse around encode / decode.
  np.testing.assert_allclose(z, 0.5 * moments[..., :2], rtol=1e-6)
  np.testing.assert_allclose(from_z, decoded, rtol=1e-6)
  # The converted .npz gives the same module and parameters.
  convert_autoencoder.save(str(tmp_path / 'vae.npz'), model, params)
  model2, params2 = convert_autoencoder.load(str(tmp_path / 'vae.npz'))
  assert model2 == model
  assert jax.tree.all(jax.tree.map(np.array_equal, params, params2))


def test_ldm_attention_names_convert(tiny_folder):
  _, state = tiny_folder
  model = autoencoder.AutoencoderKL(**convert_autoencoder.fields_from_diffusers(TINY))
  old = {k.replace('.to_q.', '.query.').replace('.to_out.0.', '.proj_attn.'): v
         for k, v in state.items()}
  old['encoder.mid_block.attentions.0.query.weight'] = (
      old['encoder.mid_block.attentions.0.query.weight'][:, :, None, None])  # 1x1-conv layout
  a = convert_autoencoder.convert_state_dict(state, model)
  b = convert_autoencoder.convert_state_dict(old, model)
  assert jax.tree.all(jax.tree.map(np.array_equal, a, b))


def test_wrong_architecture_names_keys(tiny_folder):
  _, state = tiny_folder
  model = autoencoder.AutoencoderKL(**convert_autoencoder.fields_from_diffusers(TINY))
  bad = dict(state)
  del bad['decoder.conv_out.bias']
  bad['decoder.conv_out2.bias'] = np.zeros(1, np.float32)
  with pytest.raises(DataError) as e:
    convert_autoencoder.convert_state_dict(bad, model, 'vae.safetensors')
  msg = str(e.value)
  assert '\n' not in msg
  assert '1 missing (decoder.conv_out.bias)' in msg and '1 unexpected (decoder.conv_out2.bias)' in msg
  bigger = autoencoder.AutoencoderKL(**{**convert_autoencoder.fields_from_diffusers(TINY),
                                        'block_out_channels': (8, 16, 16)})
  with pytest.raises(DataError, match=r'30 missing \(decoder\.up_blocks\.1\.upsamplers'):
    convert_autoencoder.convert_state_dict(state, bigger)
  wide = autoencoder.AutoencoderKL(**{**convert_autoencoder.fields_from_diffusers(TINY),
                                      'block_out_channels': (8, 32)})
  with pytest.raises(DataError, match='has shape'):
    convert_autoencoder.convert_state_dict(state, wide)


def test_missing_file_says_what_to_get(tmp_path):
  with pytest.raises(MissingFileError, match='stabilityai/sd-vae-ft-mse.*convert_autoencoder'):
    convert_autoencoder.load(str(tmp_path / 'nowhere'))
  os.makedirs(tmp_path / 'only_weights')
  with pytest.raises(MissingFileError, match='config.json'):
    convert_autoencoder.load(str(tmp_path / 'only_weights'))


def test_posterior():
  moments = jnp.concatenate([jnp.zeros((2, 3, 3, 4)), jnp.full((2, 3, 3, 4), 100.0)], -1)
  q = autoencoder.DiagonalGaussian.from_moments(moments)
  assert float(q.logvar.max()) == 20.0                 # clipped as in the LDM code
  prior = autoencoder.DiagonalGaussian.from_moments(jnp.zeros((2, 3, 3, 8)))
  np.testing.assert_allclose(prior.kl(), 0.0)          # KL(N(0, I) || N(0, I)) = 0
  shifted = autoencoder.DiagonalGaussian.from_moments(
      jnp.concatenate([jnp.ones((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1))], -1))
  np.testing.assert_allclose(shifted.kl(), [0.5 * 4])  # 1/2 |mu|^2 over 4 entries


def test_sd1_parameter_count():
  shapes = convert_autoencoder.param_shapes(autoencoder.SD1())
  assert sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)) == SD1_NUM_PARAMS
