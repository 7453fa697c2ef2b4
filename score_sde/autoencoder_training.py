"""Training the KL autoencoder of latent diffusion: ``train.py --mode=train_autoencoder`` ->
``<workdir>/autoencoder/checkpoints`` and, when done, ``<workdir>/autoencoder/autoencoder.npz``.

Loss per example (Rombach et al. 2022 without the perceptual and adversarial terms, which need
networks this project does not ship):

  L = sum_pixels rec(x, D(z)) + kl_weight KL(q(z | x) || N(0, I)),   z ~ q(z | x) = N(mu, sigma^2)

with rec = |x - D(z)| (``recon_loss='l1'``) or (x - D(z))^2 (``'l2'``), x in [-1, 1]; averaged over
the batch. The loop (checkpoints, preemption, TensorBoard, every device) is ``training.run``'s.

When training ends the parameters are exported in the converted-autoencoder format
(``convert_autoencoder.save``) with the latent scaling factor: ``autoencoder.scaling_factor``, or
when None 1 / std of the posterior means of the first ``autoencoder.scale_examples`` training
images (the LDM recipe: unit-variance latents); ``checkpointing.autoencoder.load_autoencoder``
reads it, which is what ``data.latents`` names.
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde import checkpointing, datasets, parallel, train_state, training
from score_sde.checkpointing import autoencoder as ae_checkpoints
from score_sde.datasets import latents
from score_sde.errors import ConfigError
from score_sde.models import autoencoder as ae_lib
from score_sde.models import convert_autoencoder

RECON_LOSSES = {'l1': jnp.abs, 'l2': jnp.square}


def from_config(config) -> ae_lib.AutoencoderKL:
  """The autoencoder of ``config.autoencoder`` for ``config.data``'s images."""
  a, d = config.autoencoder, config.data
  return ae_lib.AutoencoderKL(
      in_channels=d.num_channels, out_channels=d.num_channels,
      block_out_channels=tuple(a.block_out_channels), layers_per_block=a.layers_per_block,
      latent_channels=a.latent_channels, norm_num_groups=a.norm_num_groups,
      mid_block_add_attention=a.mid_block_add_attention,
      scaling_factor=1.0 if a.scaling_factor is None else a.scaling_factor)


def get_autoencoder_step_fn(model: ae_lib.AutoencoderKL, optimizer, kl_weight: float,
                            recon_loss: str = 'l1', train: bool = True, centered: bool = True):
  """``step_fn(state, batch, rng, axis_name=None) -> (state, {'loss', 'recon', 'kl'})``;
  ``batch['image']`` in [-1, 1] (``centered``) or [0, 1] (mapped to [-1, 1], the autoencoder's
  range). 'recon' is the per-pixel mean error, 'kl' per example."""
  if recon_loss not in RECON_LOSSES:
    raise ConfigError(f'Unknown autoencoder.recon_loss {recon_loss!r}; valid: '
                      f'{sorted(RECON_LOSSES)}.')
  rec = RECON_LOSSES[recon_loss]

  def loss_fn(params, x, rng):
    recon, posterior = model.apply({'params': params}, x, rng=rng, train=train)
    per_pixel = rec(recon - x)
    kl = posterior.kl()
    loss = jnp.mean(jnp.sum(per_pixel, axis=(1, 2, 3)) + kl_weight * kl)
    return loss, {'recon': jnp.mean(per_pixel), 'kl': jnp.mean(kl)}

  def step_fn(state, batch, rng, axis_name=None):
    x = batch['image'] if centered else 2.0 * batch['image'] - 1.0
    # A different posterior sample on every device and step.
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), parallel.device_index(axis_name))
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, rng)
    metrics = parallel.pmean({'loss': loss, **aux}, axis_name)
    if not train:
      return state, metrics
    return train_state.apply_gradients(state, grads, optimizer, axis_name), metrics
  return step_fn


def init_state(config, model, optimizer, rng) -> train_state.TrainState:
  size = config.data.image_size
  x = jnp.zeros((1, size, size, config.data.num_channels))
  return train_state.new_state(model.init(rng, x)['params'], optimizer)


def train_autoencoder(config, workdir: str,
                      devices: Sequence | None = None) -> train_state.TrainState:
  """Trains ``config.autoencoder`` for ``autoencoder.n_iters`` steps on the training images
  under ``<workdir>/autoencoder`` (resuming from there), then writes the export."""
  if config.data.image_size is None:
    raise ConfigError('An autoencoder trains on images; data.dataset is a 2-D toy.')
  if config.data.get('latents'):
    raise ConfigError('--mode=train_autoencoder trains on the images: unset data.latents (it '
                      'names the autoencoder a latent model uses).')
  parallel.initialize_distributed(config.training.distributed)
  devices = list(devices or jax.local_devices())
  mesh = parallel.make_mesh(devices if jax.process_count() == 1 else None)
  a = config.autoencoder
  model = from_config(config)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(a.lr))
  kw = dict(kl_weight=a.kl_weight, recon_loss=a.recon_loss, centered=config.data.centered)
  train_step = get_autoencoder_step_fn(model, optimizer, train=True, **kw)
  eval_step = get_autoencoder_step_fn(model, optimizer, train=False, **kw)
  data = {split: datasets.get_dataset(config, split, num_local_devices=len(devices),
                                      batch_size=a.batch_size) for split in ('train', 'test')}
  rngs = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 11), 3)
  job = training.Job(
      'autoencoder', lambda rng: init_state(config, model, optimizer, rng), train_step,
      data['train'],
      training.Schedule(a.n_iters, a.log_freq, eval_freq=a.eval_freq, snapshot_freq=a.snapshot_freq,
                        snapshot_freq_for_preemption=a.snapshot_freq, keep_snapshots=False),
      checkpointing.checkpoint_dir(ae_checkpoints.autoencoder_dir(workdir)), rng=tuple(rngs),
      eval_step=eval_step, eval_iter=data['test'],
      tensorboard_dir=os.path.join(ae_checkpoints.autoencoder_dir(workdir), 'tensorboard'),
      config=config, log_metrics=('loss', 'recon', 'kl'), batch_size=a.batch_size)
  state = training.run(job, mesh)
  if parallel.is_main_process():
    export(config, model, parallel.to_host(state.params), workdir)
  return state


def latent_std(model, params, images: np.ndarray, batch: int = 256) -> float:
  """The standard deviation of the posterior means of ``images`` (in [-1, 1])."""
  encode = jax.jit(lambda p, x: ae_lib.DiagonalGaussian.from_moments(
      model.apply({'params': p}, x, method='encode')).mean)
  means = np.concatenate([np.asarray(encode(params, images[i:i + batch]))
                          for i in range(0, len(images), batch)])
  return float(np.std(means))


def export(config, model, params, workdir: str) -> str:
  """Writes ``<workdir>/autoencoder/autoencoder.npz`` with its scaling factor; returns the path."""
  a = config.autoencoder
  if a.scaling_factor is None:
    source, preprocess, _ = datasets.DATASETS[config.data.dataset](config, 'train')
    images, _ = latents.read_images(source, preprocess, 0, min(a.scale_examples, len(source)))
    model = model.clone(scaling_factor=1.0 / latent_std(model, params, images))
  path = ae_checkpoints.export_path(workdir)
  convert_autoencoder.save(path, model, params)
  return path
