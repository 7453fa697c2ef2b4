"""Image folders (``data.dataset = 'folder'``): batches, labels from sub-folders, bad input.

``make_image_folder`` / the ``image_folder`` fixture write a small folder of PNGs; reuse them for
end-to-end runs (``from test_datasets_folder import make_image_folder``).
"""
import json

import numpy as np
import pytest
from PIL import Image

from configs import base
from score_sde import datasets

BATCH = 16   # 8 devices x 2


def make_image_folder(root, num_per_class=6, classes=('cat', 'dog'), size=(20, 28), mode='RGB',
                      seed=0):
  """Writes ``num_per_class`` PNGs of ``size`` (H, W) into ``root/<class>/`` (into ``root`` if
  ``classes`` is empty). Each image is one flat colour, so any resize or crop keeps its pixels.

  Returns {relative path: uint8 colour, shape (C,)}.
  """
  rng = np.random.default_rng(seed)
  channels = len(mode)
  colours = {}
  for c in classes or ('',):
    (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(num_per_class):
      colour = rng.integers(0, 256, channels, dtype=np.uint8)
      pixels = np.broadcast_to(colour, size + (channels,))
      name = f'{c}/img{i:03d}.png' if c else f'img{i:03d}.png'
      Image.fromarray(pixels[..., 0] if channels == 1 else np.ascontiguousarray(pixels),
                      mode).save(root / name)
      colours[name] = colour
  return colours


@pytest.fixture
def image_folder(tmp_path):
  """(folder path, colours): 2 classes x 6 RGB PNGs of 20x28."""
  root = tmp_path / 'images'
  return root, make_image_folder(root)


def folder_config(path, image_size=16, num_channels=3, **data):
  config = base.get_base_config()
  config.data.dataset = 'folder'
  config.data.path = str(path)
  config.data.image_size = image_size
  config.data.num_channels = num_channels
  for k, v in data.items():
    setattr(config.data, k, v)
  config.training.batch_size = BATCH
  config.eval.batch_size = BATCH
  return config


def test_folder_yields_every_image_with_its_label(image_folder):
  root, colours = image_folder
  it = datasets.get_dataset(folder_config(root), 'test', evaluation=True)
  [batch] = list(it)
  assert batch['image'].shape == (8, 2, 16, 16, 3) and batch['image'].dtype == np.float32
  mask = batch['mask'].reshape(-1)
  images = batch['image'].reshape(BATCH, 16, 16, 3)[mask]
  labels = batch['label'].reshape(BATCH)[mask]
  names = sorted(colours)   # the folder's order: sorted paths
  assert len(images) == len(names) == 12
  for image, label, name in zip(images, labels, names):
    expected = np.broadcast_to(colours[name] / 255.0, image.shape)
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert label == ('cat', 'dog').index(name.split('/')[0])


def test_folder_training_batches_resume_and_stay_in_range(image_folder):
  root, _ = image_folder
  config = folder_config(root, random_flip=True, centered=True)
  it = datasets.get_dataset(config, 'train')
  first = next(it)
  assert first['image'].shape == (8, 2, 16, 16, 3) and first['label'].shape == (8, 2)
  assert -1.0 <= first['image'].min() and first['image'].max() <= 1.0
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(2)]
  resumed = datasets.get_dataset(config, 'train')
  resumed.set_state(state)
  for a in expected:
    b = next(resumed)
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_grayscale_jpegs_in_the_root_have_no_labels(tmp_path):
  make_image_folder(tmp_path, num_per_class=3, classes=(), mode='L', size=(16, 16))
  Image.fromarray(np.full((40, 30), 7, np.uint8)).save(tmp_path / 'deep.JPG')
  it = datasets.get_dataset(folder_config(tmp_path, image_size=8, num_channels=1), 'test',
                            evaluation=True)
  [batch] = list(it)
  assert set(batch) == {'image', 'mask'}
  assert batch['image'].shape == (8, 2, 8, 8, 1) and batch['mask'].sum() == 4


def test_missing_or_empty_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a directory'):
    datasets.get_dataset(folder_config(tmp_path / 'nope'))
  (tmp_path / 'notes.txt').write_text('no images here')
  with pytest.raises(ValueError, match='No images'):
    datasets.get_dataset(folder_config(tmp_path))


def test_corrupt_files_are_listed_in_one_error(image_folder):
  root, _ = image_folder
  (root / 'cat' / 'garbage.png').write_bytes(b'not an image at all')
  good = (root / 'dog' / 'img000.png').read_bytes()
  (root / 'dog' / 'truncated.png').write_bytes(good[:len(good) // 2])
  with pytest.raises(ValueError, match='2 of 14 image files') as e:
    datasets.get_dataset(folder_config(root))
  assert 'garbage.png' in str(e.value) and 'truncated.png' in str(e.value)


def test_mixed_channel_counts_are_an_error(image_folder):
  root, _ = image_folder
  make_image_folder(root, num_per_class=1, classes=('cat',), mode='L', seed=1)  # overwrites one
  with pytest.raises(ValueError, match='mixed channel counts'):
    datasets.get_dataset(folder_config(root))


def test_channel_count_must_match_the_config(image_folder):
  root, _ = image_folder
  with pytest.raises(ValueError, match='num_channels = 1'):
    datasets.get_dataset(folder_config(root, num_channels=1))


def test_batch_size_must_divide_over_devices(image_folder):
  root, _ = image_folder
  with pytest.raises(ValueError, match='not divisible'):
    datasets.get_dataset(folder_config(root), 'train', batch_size=10)
