"""Input pipeline throughput (images/s) and whether it keeps up with a tiny model's CPU step.

  .venv/bin/python benchmarks/data.py [--batch_size=128] [--num_batches=40] [--num_workers=2]

1. CIFAR-10-shaped data (32x32x3, 50k examples) through ``tfds.data_source`` under
   ``tfds.testing.mock_data`` (the records are generated, in Python, instead of read from
   array_record files; that generator alone caps this figure, see "mock source alone"), and the
   same grain pipeline (shuffle, flip, scale, batch, device layout) over in-memory uint8 arrays,
   which is the pipeline's own cost.
2. A folder of random 32x32 RGB PNGs (written to a temporary directory): the scan, then
   decoding + resizing + batching.
3. A training step to compare with: a tiny DDPM (``score_sde.models`` 'ddpm', nf=32,
   ch_mult=(1, 2), one res block, no attention; the train step of ``score_sde.training``), or,
   if the project has no 'ddpm' model or with --model=convnet, a jitted tiny conv net written
   here (two 3x3 convolutions, 16 channels; forward + backward + Adam). Measured alone (a
   fixed batch) and with the folder pipeline feeding it, on one device; and the CPU time of
   one pipeline batch as a share of one step's.
"""
from __future__ import annotations

import itertools
import os
import platform
import tempfile
import time

from absl import app, flags, logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
import tensorflow_datasets as tfds

from configs import base
from score_sde import datasets, losses, models, sde_lib, train_state
from score_sde.datasets import pipeline

FLAGS = flags.DEFINE_integer('batch_size', 128, 'global batch size'), \
    flags.DEFINE_integer('num_batches', 40, 'timed batches per measurement'), \
    flags.DEFINE_integer('num_workers', 2, 'grain worker threads'), \
    flags.DEFINE_integer('num_pngs', 2000, 'PNGs written for the folder benchmark'), \
    flags.DEFINE_integer('model_steps', 8, 'timed training steps per measurement'), \
    flags.DEFINE_enum('model', 'auto', ['auto', 'ddpm', 'convnet'],
                      "step to compare with; auto: 'ddpm' if score_sde.models has it")
BATCH, NUM_BATCHES, NUM_WORKERS, NUM_PNGS, MODEL_STEPS, MODEL = FLAGS


def image_config(dataset: str, path: str | None = None, workers: int | None = None):
  config = base.get_base_config()
  config.data.dataset = dataset
  config.data.path = path
  config.data.random_flip = True
  config.data.centered = True
  config.data.num_workers = NUM_WORKERS.value if workers is None else workers
  config.training.batch_size = BATCH.value
  return config


def images_per_second(it, num_batches: int) -> tuple[float, float]:
  """(images per wall-clock second, images per CPU second of this process)."""
  next(it)   # threads started, first batch ready
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    jax.block_until_ready(next(it))
  images = num_batches * BATCH.value
  return images / (time.perf_counter() - t0), images / (time.process_time() - c0)


def fmt(rates: tuple[float, float]) -> str:
  return f'{rates[0]:7.0f} images/s wall, {rates[1]:7.0f} images per CPU-second'


class TinyConvNet(nn.Module):
  """x (B, 32, 32, 3) -> x-shaped output; stands in for a score network."""
  nf: int = 16

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(self.nf, (3, 3))(x))
    h = nn.relu(nn.Conv(self.nf, (3, 3))(h))
    return nn.Conv(x.shape[-1], (3, 3))(h)


def tiny_step_fn():
  """A jitted denoising step: loss = |net(x + 0.1 z) + z / 0.1 * 0.01|^2 (a DSM-shaped loss)."""
  net = TinyConvNet()
  opt = optax.adam(1e-4)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  state = (params, opt.init(params))

  @jax.jit
  def step(state, x, rng):
    params, opt_state = state
    def loss_fn(p):
      z = jax.random.normal(rng, x.shape)
      return jnp.mean((net.apply(p, x + 0.1 * z) * 0.1 + z) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss
  return step, state


def project_step_fn():
  """The project's train step on a tiny DDPM: (jitted step(state, x, rng) -> (state, loss),
  initial state)."""
  from configs.vp import cifar10_ddpm_continuous   # pylint: disable=import-outside-toplevel
  config = cifar10_ddpm_continuous.get_config()
  config.model.update(name='ddpm', nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  optimizer = train_state.get_optimizer(config.optim)
  train_step, _ = losses.get_step_fns(config, sde, model, optimizer)
  state = train_state.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))

  @jax.jit
  def step(state, x, rng):
    state, metrics = train_step(state, {'image': x}, rng)
    return state, metrics['loss']
  return step, state


def steps_per_second(step, state, batches, num_steps: int) -> tuple[float, float]:
  """(steps per wall-clock second, steps per CPU second of this process)."""
  rng = jax.random.PRNGKey(1)
  state, loss = step(state, next(batches), rng)   # compile
  jax.block_until_ready(loss)
  t0, c0 = time.perf_counter(), time.process_time()
  for i in range(num_steps):
    state, loss = step(state, next(batches), jax.random.fold_in(rng, i))
  jax.block_until_ready(loss)
  return num_steps / (time.perf_counter() - t0), num_steps / (time.process_time() - c0)


def write_pngs(root: str, n: int) -> None:
  rng = np.random.default_rng(0)
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        os.path.join(root, f'{i:06d}.png'))


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  n = NUM_BATCHES.value
  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, '
        f'JAX {jax.__version__} on {jax.devices()[0].platform}; batch {BATCH.value}')
  with tfds.testing.mock_data(num_examples=50000, policy=tfds.testing.MockPolicy.USE_CODE):
    for workers in sorted({0, 1, NUM_WORKERS.value}):
      it = datasets.get_dataset(image_config('cifar10', workers=workers), 'train',
                                num_local_devices=1)
      print(f'cifar10 (mock records), {workers} worker threads: {fmt(images_per_second(it, n))}')
    source = tfds.data_source('cifar10', split='train')
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n * BATCH.value // 4):
      source[i]
    m = n * BATCH.value / 4
    print(f'cifar10 mock source alone (no pipeline): '
          f'{fmt((m / (time.perf_counter() - t0), m / (time.process_time() - c0)))}')
  arrays = np.random.default_rng(0).integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8)
  config = image_config('cifar10')
  for workers in sorted({0, NUM_WORKERS.value}):
    opts = pipeline.PipelineOptions(
        global_batch_size=BATCH.value, num_local_devices=1, image_shape=(32, 32, 3), seed=0,
        shuffle=True, num_epochs=None, random_flip=True, uniform_dequantization=True,
        scaler=datasets.get_data_scaler(config), num_workers=workers)
    it = pipeline.build(arrays, lambda a: {'image': a}, opts)
    print(f'in-memory uint8 32x32x3 + flip + dequantization, {workers} worker threads: '
          f'{fmt(images_per_second(it, n))}')
  with tempfile.TemporaryDirectory() as root:
    write_pngs(root, NUM_PNGS.value)
    t0 = time.perf_counter()
    it = datasets.get_dataset(image_config('folder', root), 'train', num_local_devices=1)
    scan = time.perf_counter() - t0
    print(f'folder of {NUM_PNGS.value} 32x32 PNGs: scan {scan:.2f} s '
          f'({NUM_PNGS.value / scan:.0f} files/s)')
    for w in sorted({0, NUM_WORKERS.value}):
      it = datasets.get_dataset(image_config('folder', root, workers=w), 'train',
                                num_local_devices=1)
      folder_rates = images_per_second(it, n)
      print(f'  decode + resize + flip + batch, {w} worker threads: {fmt(folder_rates)}')
    if MODEL.value == 'ddpm' or (MODEL.value == 'auto' and 'ddpm' in models.MODELS):
      step, state = project_step_fn()
      model_name = ('tiny DDPM (score_sde.models ddpm, nf=32, ch_mult=(1, 2), 1 res block) '
                    'through score_sde.training\'s train step')
    else:
      step, state = tiny_step_fn()
      model_name = 'tiny conv net (jitted, written in this benchmark)'
    fixed = next(it)['image'][0]
    n = MODEL_STEPS.value
    # Alternated and best of 2: the machine is shared, so the fastest run is the least disturbed.
    alone, fed = [], {w: [] for w in sorted({0, NUM_WORKERS.value})}
    for _ in range(2):
      alone.append(steps_per_second(step, state, itertools.repeat(fixed), n))
      for w in fed:
        feed = datasets.get_dataset(image_config('folder', root, workers=w), 'train',
                                    num_local_devices=1)
        fed[w].append(steps_per_second(step, state, (b['image'][0] for b in feed), n))
  best_alone = max(alone)
  print(f'{model_name}, batch {BATCH.value}: {best_alone[0]:.2f} steps/s wall '
        f'({best_alone[0] * BATCH.value:.0f} images/s), {best_alone[1]:.2f} steps per CPU-second')
  for w, r in fed.items():
    best = max(r)
    print(f'  fed by the folder pipeline, {w} worker threads: {best[0]:.2f} steps/s wall '
          f'({best[0] / best_alone[0]:.0%} of a fixed batch)')
  cpu_share = BATCH.value / folder_rates[1] * best_alone[1]
  print(f'CPU time of one batch of the folder pipeline / CPU time of one step: {cpu_share:.1%}')


if __name__ == '__main__':
  app.run(main)
