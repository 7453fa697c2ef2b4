"""Latent datasets: an image split encoded once by an autoencoder, cached on disk in shards.

    <cache root>/<identity[:16]>/manifest.json     what was encoded, by which autoencoder
                                 shard_00000.npz   'latents' (n, h, w, c) float32 [, 'labels']
                                 ...

A cache entry is the posterior mean of every image of one split (in the split's order), times
the autoencoder's scaling factor: z_scaled = scaling_factor (E[z | x] - shift_factor), so the
diffusion model sees unit-scale latents. The ``identity`` is a SHA-256 over the autoencoder's
fields and every parameter byte, and over the image source (dataset, split, image size,
channels): a different autoencoder or dataset gets its own directory and is encoded anew, and a
manifest whose identity differs from its directory name is refused, so a cache is never silently
reused for the wrong encoder. Shards are written atomically (temporary name, then rename), so an
interrupted encoding resumes at the first missing shard. On several hosts each host encodes the
shards i with i mod process_count == process_index, then every host reads all of them.

``get_source`` is what ``datasets.get_dataset`` uses when ``data.latents`` is set: the image split
of ``data.dataset`` encoded by ``data.latents``' autoencoder on this host's devices. The model
is built for ``latent_view(config)``, whose image size and channels are the latent's;
``get_decoder`` turns its samples back into images before pictures and metrics.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Mapping

import flax
import jax
import ml_collections
import numpy as np

from score_sde import parallel, reporting
from score_sde.errors import ConfigError, DataError

MANIFEST = 'manifest.json'
FORMAT = 1


def autoencoder_identity(fields: Mapping[str, Any], params: Any) -> str:
  """SHA-256 hex of the autoencoder's fields (JSON) and its parameters (paths, shapes, bytes)."""
  h = hashlib.sha256(json.dumps(dict(fields), sort_keys=True, default=list).encode())
  for path, value in sorted(flax.traverse_util.flatten_dict(params).items()):
    value = np.ascontiguousarray(np.asarray(value, np.float32))
    h.update('/'.join(path).encode() + str(value.shape).encode())
    h.update(value.tobytes())
  return h.hexdigest()


def cache_identity(autoencoder: str, source: Mapping[str, Any]) -> str:
  """The identity of one cache: an autoencoder identity and the image source's description."""
  return hashlib.sha256(json.dumps({'autoencoder': autoencoder, 'source': dict(source)},
                                   sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class LatentSource:
  """Random access to ``{'image': (h, w, c) float32 latent [, 'label': int32]}`` records."""
  latents: np.ndarray
  labels: np.ndarray | None

  def __len__(self) -> int:
    return len(self.latents)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = {'image': self.latents[index]}
    if self.labels is not None:
      record['label'] = self.labels[index]
    return record


def latent_view(config):
  """The config as the diffusion model sees it: with ``data.latents``, a copy whose
  ``data.image_size`` / ``num_channels`` are the latent's; otherwise ``config`` itself."""
  d = config.data
  if not d.get('latents'):
    return config
  view = ml_collections.ConfigDict(config.to_dict())
  view.data.image_size, view.data.num_channels = d.latent_size, d.latent_channels
  return view


def check_config(config) -> None:
  """One-line ConfigErrors for latent settings that cannot work (before anything is loaded)."""
  d = config.data
  shape_keys = [k for k in ('latent_size', 'latent_channels') if d.get(k) is not None]
  if not d.get('latents'):
    if shape_keys:
      raise ConfigError(f'data.{shape_keys[0]} is set but data.latents names no autoencoder; '
                        'set --config.data.latents to a train_autoencoder workdir or a '
                        'converted .npz.')
    return
  if len(shape_keys) < 2:
    raise ConfigError('data.latents needs data.latent_size and data.latent_channels: the latent '
                      'shape the model is built for.')
  if d.image_size is None:
    raise ConfigError('data.latents encodes images; data.dataset is a 2-D toy.')
  if not d.centered:
    raise ConfigError('Latents are zero-centred: set data.centered = True with data.latents.')
  if config.eval.get('enable_bpd'):
    raise ConfigError('eval.enable_bpd would measure bits/dim of the latents, not of the images; '
                      'set it to False for a latent model (data.latents).')


def check_autoencoder(config, model) -> None:
  """ConfigError unless ``model`` (an AutoencoderKL) fits the images and the latent shape."""
  d = config.data
  image = (d.image_size, d.image_size, d.num_channels)
  latent = model.latent_shape(image)
  wanted = (d.latent_size, d.latent_size, d.latent_channels)
  if model.in_channels != d.num_channels or latent != wanted:
    raise ConfigError(
        f'The autoencoder of data.latents={d.latents!r} maps {d.image_size}x{d.image_size}x'
        f'{model.in_channels} images to {"x".join(map(str, latent))} latents, but the model is '
        f'configured for {d.image_size}x{d.image_size}x{d.num_channels} images and '
        f'{"x".join(map(str, wanted))} latents (data.latent_size, data.latent_channels).')


def load_autoencoder(config):
  """(module, params) of ``data.latents``, checked against the config's shapes."""
  from score_sde.checkpointing import autoencoder as ae_checkpoints
  model, params = ae_checkpoints.load_autoencoder(config.data.latents)
  check_autoencoder(config, model)
  return model, params


def read_images(source, preprocess, start: int, stop: int
                ) -> tuple[np.ndarray, np.ndarray | None]:
  """Examples start..stop-1 of a random-access image source: (images float32 in [-1, 1], the
  autoencoder's range; labels int32 or None)."""
  records = [preprocess(source[i]) for i in range(start, stop)]
  images = np.stack([r['image'] for r in records]).astype(np.float32) / np.float32(127.5) - 1
  labels = np.asarray([r['label'] for r in records], np.int32) if 'label' in records[0] else None
  return images, labels


def default_cache(latents: str) -> str:
  """Beside the autoencoder: ``<dir>/latent_cache`` for a folder, ``<file>.latent_cache``."""
  path = os.path.normpath(latents)
  return os.path.join(path, 'latent_cache') if os.path.isdir(path) else path + '.latent_cache'


def get_source(config, split: str, image_source) -> tuple[LatentSource, Callable, bool]:
  """(latent source, identity preprocess, has_label) for ``get_dataset``: ``image_source`` is
  the dataset builder's (source, preprocess, has_label) of the images, encoded once here."""
  source, preprocess, has_label = image_source
  model, params = load_autoencoder(config)
  d = config.data
  fields = {k: getattr(model, k) for k in model.__dataclass_fields__ if k not in ('parent', 'name')}
  identity = cache_identity(autoencoder_identity(fields, params), {
      'dataset': d.dataset, 'path': d.get('path'), 'split': split, 'image_size': d.image_size,
      'num_channels': d.num_channels, 'encoding': 'posterior mean x scaling_factor'})
  encode = parallel.local_map(
      lambda p, x: model.apply({'params': p}, x, method='to_latents'), config.eval.batch_size)
  latents = build_or_load(
      d.latent_cache or default_cache(d.latents), identity, len(source),
      lambda start, stop: read_images(source, preprocess, start, stop),
      lambda images: encode(params, images), process_index=jax.process_index(),
      process_count=jax.process_count(),
      barrier=lambda: parallel.barrier(f'score_sde_latents_{identity[:16]}'))
  return latents, _unchanged, has_label


def _unchanged(record):
  return record


def get_decoder(config) -> Callable[[np.ndarray], np.ndarray]:
  """``decode(latents (N, h, w, c)) -> images (N, H, W, C)`` in [-1, 1] on this host's devices
  (the diffusion model's scaled latents in, ``from_latents`` of ``data.latents``' autoencoder)."""
  model, params = load_autoencoder(config)
  decode = parallel.local_map(
      lambda p, z: model.apply({'params': p}, z, method='from_latents'), config.eval.batch_size)
  return lambda latents: decode(params, np.asarray(latents, np.float32))


def _shard_path(directory: str, i: int) -> str:
  return os.path.join(directory, f'shard_{i:05d}.npz')


def _check_manifest(directory: str, identity: str) -> dict | None:
  manifest = reporting.read_json(os.path.join(directory, MANIFEST))
  if manifest is None:
    return None
  if manifest.get('identity') != identity:
    raise DataError(f'The latent cache {directory!r} was written for another autoencoder or '
                    f'dataset (identity {str(manifest.get("identity"))[:16]}, this run '
                    f'{identity[:16]}); delete that folder or point data.latent_cache elsewhere.')
  return manifest


def build_or_load(root: str, identity: str, num_examples: int,
                  read_images: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
                  encode: Callable[[np.ndarray], np.ndarray], shard_size: int = 1024,
                  process_index: int = 0, process_count: int = 1,
                  barrier: Callable[[], None] = lambda: None,
                  log: Callable[[str], None] = reporting.say) -> LatentSource:
  """The cached latents of ``num_examples`` images, encoding the shards that are missing.

  Args:
    root: the cache root; this cache lives in ``root/<identity[:16]>``.
    identity: ``cache_identity(...)`` of the autoencoder and image source.
    read_images: ``(start, stop) -> (images (n, H, W, C) in the encoder's range, labels (n,) or
      None)`` for examples start..stop-1 of the split, in order.
    encode: images -> scaled latents (n, h, w, c), e.g. on all local devices.
    process_index, process_count, barrier: this host's share of the shards and a cross-host
      barrier (single host: the defaults).
  """
  directory = os.path.join(root, identity[:16])
  os.makedirs(directory, exist_ok=True)
  num_shards = max(1, -(-num_examples // shard_size))
  manifest = _check_manifest(directory, identity)
  if manifest is None and process_index == 0:
    reporting.write_json(os.path.join(directory, MANIFEST), {
        'format': FORMAT, 'identity': identity, 'num_examples': num_examples,
        'shard_size': shard_size, 'num_shards': num_shards})
  barrier()
  manifest = _check_manifest(directory, identity)
  shard_size, num_shards = manifest['shard_size'], manifest['num_shards']
  todo = [i for i in range(num_shards)
          if i % process_count == process_index and not os.path.exists(_shard_path(directory, i))]
  if todo:
    log(f'Encoding {len(todo)} of {num_shards} latent shards into {directory}')
  for i in todo:
    start, stop = i * shard_size, min((i + 1) * shard_size, num_examples)
    images, labels = read_images(start, stop)
    arrays = {'latents': np.asarray(encode(images), np.float32)}
    if labels is not None:
      arrays['labels'] = np.asarray(labels, np.int32)
    reporting.write_npz(_shard_path(directory, i), **arrays)
  barrier()
  return load(directory, num_shards)


def load(directory: str, num_shards: int) -> LatentSource:
  """All shards of a complete cache, concatenated."""
  latents, labels = [], []
  for i in range(num_shards):
    with np.load(_shard_path(directory, i)) as shard:
      latents.append(shard['latents'])
      labels.append(shard['labels'] if 'labels' in shard else None)
  has_labels = labels[0] is not None
  return LatentSource(np.concatenate(latents),
                      np.concatenate(labels) if has_labels else None)
