"""Latent diffusion on the digits, tiny: the autoencoder's train step lowers its loss and the
export carries the scale factor; the split is encoded once into the cache and fed as a dataset;
samples decode to images; each bad input is one line. (``train.py --mode=train_autoencoder``
itself runs in ``benchmarks/latent_digits.py``: the loop is the score model's, tested there.)"""
from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from configs import default_digits
from score_sde import autoencoder_training, config_checks, datasets, models
from score_sde.checkpointing import autoencoder as ae_checkpoints
from score_sde.datasets import latents
from score_sde.errors import ConfigError, MissingFileError


def _config(workdir=None):
  config = default_digits.get_default_configs()
  config.data.image_size = 8                 # the digits' native size: 8x8 -> 4x4x2 latents
  a = config.autoencoder
  a.block_out_channels, a.layers_per_block, a.latent_channels = (8, 16), 1, 2
  a.norm_num_groups, a.batch_size, a.n_iters = 4, 16, 1
  a.log_freq = a.snapshot_freq = 1
  a.eval_freq = 100                          # no eval step to compile
  a.scale_examples = 64
  config.eval.batch_size = 16
  if workdir is not None:
    config.data.latents, config.data.latent_size, config.data.latent_channels = workdir, 4, 2
    config.model.attn_resolutions = (2,)
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """Three Adam steps on one batch of digits, then the export (as train_autoencoder ends)."""
  config = _config()
  model = autoencoder_training.from_config(config)
  optimizer = optax.adam(1e-2)
  state = autoencoder_training.init_state(config, model, optimizer, jax.random.PRNGKey(0))
  step = jax.jit(autoencoder_training.get_autoencoder_step_fn(model, optimizer, kl_weight=1e-3))
  source, preprocess, _ = datasets.DATASETS['digits'](config, 'train')
  batch = {'image': latents.read_images(source, preprocess, 0, 16)[0]}
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.PRNGKey(1))
    losses.append(float(metrics['loss']))
  workdir = str(tmp_path_factory.mktemp('digits_ae'))
  autoencoder_training.export(config, model, state.params, workdir)
  return workdir, losses


def test_autoencoder_trains_exports_and_encodes_once(trained, capsys):
  workdir, losses = trained
  assert losses[2] < losses[0]
  model, params = ae_checkpoints.load_autoencoder(workdir)
  assert model.latent_shape((8, 8, 1)) == (4, 4, 2) and 0 < model.scaling_factor < np.inf
  config = _config(workdir)
  assert datasets.sample_shape(config) == (4, 4, 2)
  net = models.get_model(config)
  assert getattr(net, 'net', net).num_channels == 2      # built for the latents
  batch = next(datasets.get_dataset(config, 'train', num_local_devices=1))
  assert batch['image'].shape == (1, 64, 4, 4, 2) and batch['label'].shape == (1, 64)
  assert 'Encoding' in capsys.readouterr().out
  next(datasets.get_dataset(config, 'train', num_local_devices=1))
  assert 'Encoding' not in capsys.readouterr().out       # the cache is reused
  images = latents.get_decoder(config)(batch['image'][0, :3])
  assert images.shape == (3, 8, 8, 1) and np.all(np.isfinite(images))
  # The cached latents are the scaled posterior means of the images, in the split's order.
  source, preprocess, _ = datasets.DATASETS['digits'](config, 'train')
  x, _ = latents.read_images(source, preprocess, 0, 2)
  z = jax.jit(lambda p, x: model.apply({'params': p}, x, method='to_latents'))(params, x)
  cached = latents.get_source(config, 'train', (source, preprocess, True))[0]
  np.testing.assert_allclose(cached.latents[:2], z, rtol=1e-5, atol=1e-6)


def test_bad_latent_inputs_are_one_line(trained, tmp_path):
  workdir, _ = trained
  no_ae = _config()
  no_ae.data.latent_size = 4
  with pytest.raises(ConfigError, match='^data.latent_size is set but data.latents names no'):
    config_checks.check(no_ae, 'train', 1)
  mismatch = _config(workdir)
  mismatch.data.latent_channels = 4
  with pytest.raises(ConfigError, match=r'maps 8x8x1 images to 4x4x2 latents, but .* 4x4x4 '):
    datasets.get_dataset(mismatch, 'train', num_local_devices=1)
  missing = _config(str(tmp_path))
  with pytest.raises(MissingFileError, match='holds no autoencoder: train one there'):
    datasets.get_dataset(missing, 'train', num_local_devices=1)
  with pytest.raises(ConfigError, match='^--mode=train_autoencoder trains on the images'):
    autoencoder_training.train_autoencoder(_config(workdir), str(tmp_path))
