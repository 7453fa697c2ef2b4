"""The latent cache: written once and reused, a new directory for another autoencoder, a
mismatched manifest refused in one line, an interrupted encoding resumed where it stopped."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from score_sde.datasets import latents
from score_sde.errors import DataError

N = 10
IMAGES = np.arange(N * 4 * 4, dtype=np.float32).reshape(N, 4, 4, 1) / 100
LABELS = np.arange(N, dtype=np.int32) % 3


def _read(start, stop):
  return IMAGES[start:stop], LABELS[start:stop]


class _Encoder:
  """images -> 2x2x2 'latents' (a fixed function), counting the images it saw; optionally fails
  after ``fail_after`` calls (an interrupted run)."""

  def __init__(self, fail_after=None):
    self.seen, self.calls, self.fail_after = 0, 0, fail_after

  def __call__(self, images):
    if self.fail_after is not None and self.calls >= self.fail_after:
      raise KeyboardInterrupt
    self.calls += 1
    self.seen += len(images)
    pooled = images.reshape(len(images), 2, 2, 2, 2, 1).mean(axis=(2, 4))
    return np.concatenate([pooled, -pooled], axis=-1)


def _build(root, identity, encoder):
  return latents.build_or_load(str(root), identity, N, _read, encoder, shard_size=4,
                               log=lambda _: None)


def test_written_once_then_reused(tmp_path):
  ident = latents.cache_identity('ae-1', {'dataset': 'digits', 'split': 'train'})
  first = _Encoder()
  source = _build(tmp_path, ident, first)
  assert first.seen == N and len(source) == N
  np.testing.assert_array_equal(source[7]['image'], first(IMAGES[7:8])[0])
  assert source[7]['label'] == LABELS[7]
  again = _Encoder()
  reused = _build(tmp_path, ident, again)
  assert again.seen == 0
  np.testing.assert_array_equal(reused.latents, source.latents)


def test_other_autoencoder_gets_its_own_cache_and_bad_manifest_is_refused(tmp_path):
  params = {'conv': {'kernel': np.ones((3, 3, 1, 2), np.float32)}}
  ident = latents.autoencoder_identity({'latent_channels': 2}, params)
  changed = latents.autoencoder_identity(
      {'latent_channels': 2}, {'conv': {'kernel': np.full((3, 3, 1, 2), 1.001, np.float32)}})
  assert ident != changed
  assert ident != latents.autoencoder_identity({'latent_channels': 4}, params)
  a = latents.cache_identity(ident, {'split': 'train'})
  b = latents.cache_identity(changed, {'split': 'train'})
  _build(tmp_path, a, _Encoder())
  encoder = _Encoder()
  _build(tmp_path, b, encoder)
  assert encoder.seen == N                      # rebuilt for the changed autoencoder
  assert sorted(os.listdir(tmp_path)) == sorted([a[:16], b[:16]])
  manifest = tmp_path / a[:16] / latents.MANIFEST
  manifest.write_text(json.dumps({**json.loads(manifest.read_text()), 'identity': b}))
  with pytest.raises(DataError, match='written for another autoencoder or dataset') as e:
    _build(tmp_path, a, _Encoder())
  assert '\n' not in str(e.value)


def test_interrupted_encoding_resumes(tmp_path):
  ident = latents.cache_identity('ae', {'split': 'train'})
  with pytest.raises(KeyboardInterrupt):
    _build(tmp_path, ident, _Encoder(fail_after=2))      # shards 0 and 1 written, then stopped
  assert sorted(f for f in os.listdir(tmp_path / ident[:16]) if f.startswith('shard')) == [
      'shard_00000.npz', 'shard_00001.npz']
  rest = _Encoder()
  source = _build(tmp_path, ident, rest)
  assert rest.seen == 2                                  # only the last shard (examples 8, 9)
  np.testing.assert_array_equal(source.latents, _Encoder()(IMAGES))
