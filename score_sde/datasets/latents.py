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
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Mapping

import flax
import numpy as np

from score_sde.errors import DataError

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


def _shard_path(directory: str, i: int) -> str:
  return os.path.join(directory, f'shard_{i:05d}.npz')


def _write_atomic_npz(path: str, **arrays) -> None:
  tmp = path + '.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _check_manifest(directory: str, identity: str) -> dict | None:
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    manifest = json.load(f)
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
                  log: Callable[[str], None] = print) -> LatentSource:
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
    manifest = {'format': FORMAT, 'identity': identity, 'num_examples': num_examples,
                'shard_size': shard_size, 'num_shards': num_shards}
    with open(os.path.join(directory, MANIFEST + '.tmp'), 'w') as f:
      json.dump(manifest, f, indent=1)
    os.replace(os.path.join(directory, MANIFEST + '.tmp'), os.path.join(directory, MANIFEST))
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
    _write_atomic_npz(_shard_path(directory, i), **arrays)
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
