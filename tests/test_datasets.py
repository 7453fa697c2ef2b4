"""TFDS image pipeline under ``tfds.testing.mock_data``: the real ``tfds.data_source`` code path
(builder -> ArrayRecordDataSource, with the record reader mocked), nothing downloaded.

Layout, ranges, dequantization, flips, order, resuming, finite evaluation passes, bad input.
"""
import json
import os
import pathlib
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import base
from score_sde import datasets
from score_sde.datasets import tfds_images

NUM_EXAMPLES = 37   # not a multiple of the batch: the evaluation pass pads its last batch
BATCH = 16          # 8 devices x 2


def image_config(dataset='cifar10', image_size=32, num_channels=3, **data):
  config = base.get_base_config()
  config.data.dataset = dataset
  config.data.image_size = image_size
  config.data.num_channels = num_channels
  config.data.random_flip = False
  for k, v in data.items():
    setattr(config.data, k, v)
  config.training.batch_size = BATCH
  config.eval.batch_size = BATCH
  return config


@pytest.fixture
def mock_tfds():
  """Mocked TFDS in which any download attempt fails the test."""
  def no_download(*args, **kwargs):
    raise AssertionError('the pipeline must never download or prepare data')
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE):
    with mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare', no_download):
      yield


def raw_split(name='cifar10', split='test'):
  """The mocked split's uint8 images, in order, read directly (shape (N, H, W, C))."""
  source = tfds.data_source(name, split=split, download=False)
  return np.stack([np.asarray(source[i]['image']) for i in range(len(source))])


def take(it, n):
  return [next(it) for _ in range(n)]


def test_reads_through_tfds_data_source_without_download(mock_tfds):
  opened, data_source = [], tfds.data_source

  def spy(*args, **kwargs):
    opened.append((kwargs, data_source(*args, **kwargs)))
    return opened[-1][1]
  with mock.patch.object(tfds, 'data_source', spy):
    batch = next(datasets.get_dataset(image_config(), 'train'))
  [(kwargs, source)] = opened
  assert kwargs['download'] is False and kwargs['split'] == 'train'
  assert type(source).__name__ == 'ArrayRecordDataSource'
  assert set(batch) == {'image', 'label'}


def test_batches_are_laid_out_for_the_devices(mock_tfds):
  assert jax.local_device_count() == 8
  it = datasets.get_dataset(image_config(), 'test', evaluation=True)
  batch = next(it)
  assert batch['image'].shape == (8, 2, 32, 32, 3) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (8, 2) and batch['label'].dtype == np.int32
  assert batch['mask'].shape == (8, 2) and batch['mask'].all()
  # Device d holds examples 2d, 2d + 1 of the global batch, in the split's order.
  expected = raw_split()[:BATCH].reshape(8, 2, 32, 32, 3) / 255.0
  np.testing.assert_allclose(batch['image'], expected, atol=1e-6)


def test_single_channel_dataset(mock_tfds):
  batch = next(datasets.get_dataset(image_config('mnist', 28, 1), 'train'))
  assert batch['image'].shape == (8, 2, 28, 28, 1)


@pytest.mark.parametrize('dataset, size',
                         [('celeb_a', 16), ('lsun/bedroom', 8), ('svhn_cropped', 16)])
def test_crop_resize_datasets(mock_tfds, dataset, size):
  batch = next(datasets.get_dataset(image_config(dataset, size), 'train'))
  assert batch['image'].shape == (8, 2, size, size, 3)
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0


@pytest.mark.parametrize('centered', [False, True])
def test_value_ranges_are_quantized_pixels(mock_tfds, centered):
  x = next(datasets.get_dataset(image_config(centered=centered), 'train'))['image']
  lo = -1.0 if centered else 0.0
  assert lo <= x.min() and x.max() <= 1.0
  assert x.min() < lo + 0.1 and x.max() > 0.9   # uses the whole range
  pixels = (x + 1.0) / 2.0 * 255.0 if centered else x * 255.0
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)


@pytest.mark.parametrize('centered', [False, True])
def test_uniform_dequantization_is_pixel_plus_noise_over_256(mock_tfds, centered):
  plain = next(datasets.get_dataset(image_config(centered=centered), 'train'))['image']
  deq = next(datasets.get_dataset(image_config(centered=centered, uniform_dequantization=True),
                                  'train'))['image']
  inverse = datasets.get_data_inverse_scaler(image_config(centered=centered))
  q = np.round(inverse(plain) * 255.0)        # the integer pixels
  u = inverse(deq) * 256.0 - q                # x = (U + q) / 256  =>  U = 256 x - q
  assert u.min() >= -1e-4 and u.max() < 1.0 + 1e-4
  assert 0.45 < u.mean() < 0.55 and 0.25 < u.std() < 0.33   # U[0, 1): mean 1/2, std 0.289


def test_flips_only_in_training(mock_tfds):
  flip = dict(random_flip=True)
  def first_batch(config):
    return next(datasets.get_dataset(config, 'train'))['image'].reshape(BATCH, 32, 32, 3)
  plain, flipped = first_batch(image_config()), first_batch(image_config(**flip))
  same = [np.array_equal(a, b) for a, b in zip(plain, flipped)]
  mirrored = [np.array_equal(a[:, ::-1], b) for a, b in zip(plain, flipped)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert 0 < sum(mirrored) < BATCH
  for kwargs in [{}, {'evaluation': True}]:
    a = next(datasets.get_dataset(image_config(), 'test', **kwargs))['image']
    b = next(datasets.get_dataset(image_config(**flip), 'test', **kwargs))['image']
    np.testing.assert_array_equal(a, b)


def test_same_seed_same_order_other_seed_other_order(mock_tfds):
  def first_batches(seed):
    config = image_config(random_flip=True, uniform_dequantization=True)
    config.seed = seed
    return np.stack([b['image'] for b in take(datasets.get_dataset(config, 'train'), 4)])
  np.testing.assert_array_equal(first_batches(0), first_batches(0))
  assert not np.allclose(first_batches(0), first_batches(1))


def test_restored_iterator_continues_where_it_stopped(mock_tfds):
  config = image_config(random_flip=True, uniform_dequantization=True)
  it = datasets.get_dataset(config, 'train')
  take(it, 3)   # 48 examples: past the end of the first epoch (37)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 4)
  resumed = datasets.get_dataset(config, 'train')
  resumed.set_state(state)
  for a, b in zip(expected, take(resumed, 4)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


@pytest.mark.parametrize('num_repeats', [1, 2])
def test_evaluation_pass_covers_the_split_exactly(mock_tfds, num_repeats):
  it = datasets.get_dataset(image_config(), 'test', evaluation=True, num_repeats=num_repeats)
  batches = list(it)
  assert len(batches) == it.num_batches == -(-NUM_EXAMPLES * num_repeats // BATCH)
  images = np.concatenate([b['image'].reshape(BATCH, 32, 32, 3)[b['mask'].reshape(-1)]
                           for b in batches])
  expected = np.concatenate([raw_split()] * num_repeats) / 255.0
  np.testing.assert_allclose(images, expected, atol=1e-6)
  assert batches[-1]['mask'].sum() == NUM_EXAMPLES * num_repeats - (len(batches) - 1) * BATCH
  with pytest.raises(StopIteration):
    next(it)


def test_evaluation_pass_resumes_mid_split(mock_tfds):
  it = datasets.get_dataset(image_config(), 'test', evaluation=True)
  next(it)
  resumed = datasets.get_dataset(image_config(), 'test', evaluation=True)
  resumed.set_state(json.loads(json.dumps(it.get_state())))
  rest_a, rest_b = list(it), list(resumed)
  assert len(rest_a) == len(rest_b) == 2
  np.testing.assert_array_equal(rest_a[-1]['mask'], rest_b[-1]['mask'])


def test_unknown_dataset_lists_the_valid_names_briefly():
  with pytest.raises(ValueError, match='Unknown dataset') as e:
    datasets.get_dataset(image_config('cifar100'))
  for name in ['spiral', 'cifar10', 'celeb_a', 'folder']:
    assert repr(name) in str(e.value)
  assert 'lsun/<category>' in str(e.value) and len(str(e.value)) < 300   # not 30 LSUN names
  with pytest.raises(ValueError, match="Unknown LSUN category .* 'lsun/kitchens'.*, kitchen,"):
    datasets.get_dataset(image_config('lsun/kitchens'))


def test_batch_size_must_divide_over_devices():
  with pytest.raises(ValueError, match='not divisible'):
    datasets.get_dataset(image_config(), 'train', batch_size=12)


def test_channel_mismatch_is_a_clear_error(mock_tfds):
  with pytest.raises(ValueError, match='num_channels=1'):
    datasets.get_dataset(image_config('mnist', 28, 3))


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                         side_effect=AssertionError('no download')):
    with pytest.raises(tfds_images.DatasetNotPreparedError) as e:
      datasets.get_dataset(image_config(data_dir=str(tmp_path)))
  message = str(e.value)
  assert 'score_sde[tf]' in message and 'tfds build cifar10' in message and str(tmp_path) in message
  assert not any(tmp_path.rglob('*.array_record*'))


def test_pipeline_never_imports_tensorflow(tmp_path):
  """TensorFlow is only for preparing data: a fresh process reads batches without importing it
  (whether or not it is installed; this venv has none, CI with the [tf] extra has it)."""
  script = '''
import sys
import tensorflow_datasets as tfds
from configs import base
from score_sde import datasets
config = base.get_base_config()
config.data.dataset = 'cifar10'
config.training.batch_size = 8
with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
  before = 'tensorflow' in sys.modules   # (the test machinery may import it if installed)
  batch = next(datasets.get_dataset(config, 'train', num_local_devices=1))
after = 'tensorflow' in sys.modules
print(batch['image'].shape, 'imported' if after and not before else 'not imported')
'''
  root = pathlib.Path(__file__).resolve().parents[1]
  env = {**os.environ, 'PYTHONPATH': str(root), 'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert '(1, 8, 32, 32, 3) not imported' in result.stdout
