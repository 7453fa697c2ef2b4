"""The FID Inception-v3: architecture pinned by parameter counts, the pytorch-fid weight
conversion, input conventions and validation, and one small real forward pass.

That the network computes the same function as pytorch-fid's is checked outside CI (it needs
torch): ``benchmarks/inception_reference.py``, result in ``benchmarks/RESULTS.md``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from configs import base
from score_sde.errors import DataError, MissingFileError
from score_sde.evaluation import convert_inception, inception, metrics, reference_stats

# pytorch-fid's FID Inception (torchvision Inception3, 1008 classes, no aux head), counted with
# torch 2.15 / torchvision 0.29 / pytorch-fid 0.3.0: sum(p.numel() for p in model.parameters())
# and the running mean/var buffers; 94 conv+BN blocks and the fc layer.
NUM_PARAMS = 23_850_960
NUM_BN_STATS = 34_432
NUM_CONV_BLOCKS = 94


def _torch_style_state_dict(rng) -> dict[str, np.ndarray]:
  """A state dict with pytorch-fid's key names and torch layouts, random values."""
  state = {}
  flat = traverse_util.flatten_dict(inception.abstract_variables())
  for (collection, *path, leaf), value in flat.items():
    prefix = '.'.join(path)
    shape = value.shape
    if leaf == 'kernel':      # He-scaled, so activations stay O(1) through the 94 blocks
      torch_shape = shape[::-1][:2] + shape[:2] if len(shape) == 4 else shape[::-1]
      fan_in = np.prod(shape[:-1])
      state[prefix + '.weight'] = (rng.standard_normal(torch_shape, np.float32)
                                   * np.float32(np.sqrt(2 / fan_in)))
    else:
      name = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean', 'var': 'running_var'}
      state[f'{prefix}.{name[leaf]}'] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
      if leaf == 'var':
        state[prefix + '.num_batches_tracked'] = np.array(0, np.int64)
  return state


@pytest.fixture(scope='module')
def torch_state():
  return _torch_style_state_dict(np.random.default_rng(0))


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory, torch_state):
  path = str(tmp_path_factory.mktemp('inception') / 'inception_fid.npz')
  np.savez(path, **convert_inception.convert_state_dict(torch_state))
  return path


def test_parameter_counts_match_pytorch_fid():
  variables = inception.abstract_variables()
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
  assert count(variables['params']) == NUM_PARAMS
  assert count(variables['batch_stats']) == NUM_BN_STATS
  assert len(jax.tree.leaves(variables['batch_stats'])) == 2 * NUM_CONV_BLOCKS
  x = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)
  out = jax.eval_shape(inception.FIDInceptionV3().apply, variables, x)
  assert {k: v.shape for k, v in out.items()} == {
      'pool_3': (2, 2048), 'logits': (2, 1008), 'logits_unbiased': (2, 1008)}


def test_converter_maps_names_and_layouts(torch_state):
  assert len(torch_state) == 6 * NUM_CONV_BLOCKS + 2          # pytorch-fid's .pth has 566 keys
  flat = convert_inception.convert_state_dict(torch_state)
  w = torch_state['Mixed_6b.branch7x7_2.conv.weight']         # (O, I, 1, 7)
  assert w.shape == (128, 128, 1, 7)
  np.testing.assert_array_equal(flat['params/Mixed_6b/branch7x7_2/conv/kernel'],
                                w.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(flat['params/fc/kernel'], torch_state['fc.weight'].T)
  np.testing.assert_array_equal(flat['batch_stats/Mixed_7c/branch_pool/bn/var'],
                                torch_state['Mixed_7c.branch_pool.bn.running_var'])
  np.testing.assert_array_equal(flat['params/Conv2d_1a_3x3/bn/scale'],
                                torch_state['Conv2d_1a_3x3.bn.weight'])
  assert not any('num_batches_tracked' in k for k in flat)
  assert convert_inception.flax_key('Mixed_5b.branch5x5_1.bn.running_mean') == (
      'batch_stats', ('Mixed_5b', 'branch5x5_1', 'bn'), 'mean')


def test_converter_rejects_other_state_dicts(torch_state):
  with pytest.raises(DataError, match='AuxLogits.fc.weight'):
    convert_inception.convert_state_dict({**torch_state, 'AuxLogits.fc.weight': np.zeros(1)})
  missing = {k: v for k, v in torch_state.items() if k != 'Mixed_7c.branch1x1.bn.bias'}
  with pytest.raises(DataError, match='Mixed_7c/branch1x1/bn/bias is missing'):
    convert_inception.convert_state_dict(missing)
  wrong = {**torch_state, 'fc.weight': np.zeros((1000, 2048), np.float32)}   # torchvision's
  with pytest.raises(DataError, match=r'fc.weight \(1000, 2048\) has shape \(2048, 1000\)'):
    convert_inception.convert_state_dict(wrong)


def test_missing_or_wrong_weights_say_what_to_download(tmp_path):
  for path in (None, str(tmp_path / 'nope.npz')):
    with pytest.raises(MissingFileError, match='pt_inception-2015-12-05-6726825d.pth') as e:
      inception.load_variables(path)
    assert 'python -m score_sde.evaluation.convert_inception' in str(e.value)
  pth = tmp_path / 'weights.pth'
  pth.write_bytes(b'x')
  with pytest.raises(DataError, match='convert it first'):
    inception.load_variables(str(pth))
  other = tmp_path / 'other.npz'
  np.savez(other, w=np.zeros(3))
  with pytest.raises(DataError, match='Conv2d_1a_3x3/bn/mean is missing'):
    inception.load_variables(str(other))
  garbage = tmp_path / 'garbage.npz'
  garbage.write_bytes(b'not a zip')
  with pytest.raises(DataError, match='Cannot read'):
    inception.load_variables(str(garbage))
  with pytest.raises(MissingFileError, match='does not exist'):
    convert_inception.load_torch_state_dict(str(tmp_path / 'missing.pth'))


def test_converter_cli_reports_problems_in_one_line(tmp_path, capsys):
  dst = ['--dst', str(tmp_path / 'inception_fid.npz')]
  assert convert_inception.main(['--src', str(tmp_path / 'missing.pth')] + dst) == 1
  assert 'does not exist; download https://github.com/mseitzer' in capsys.readouterr().err
  try:
    import torch  # noqa: F401
  except ImportError:
    (tmp_path / 'w.pth').write_bytes(b'x')
    assert convert_inception.main(['--src', str(tmp_path / 'w.pth')] + dst) == 1
    assert 'needs torch' in capsys.readouterr().err
  assert not (tmp_path / 'inception_fid.npz').exists()


def test_images_are_validated():
  with pytest.raises(DataError, match=r'got shape \(4, 8, 8\)'):
    inception.check_images(np.zeros((4, 8, 8), np.uint8))
  with pytest.raises(DataError, match=r'got shape \(4, 3, 8, 8\)'):       # NCHW
    inception.check_images(np.zeros((4, 3, 8, 8), np.float32))
  with pytest.raises(DataError, match='dtype int32'):
    inception.check_images(np.zeros((4, 8, 8, 3), np.int32))
  with pytest.raises(DataError, match=r'\[-1, 1\]'):                     # centred data
    inception.check_images(np.linspace(-1, 1, 192, dtype=np.float32).reshape(1, 8, 8, 3))
  with pytest.raises(DataError, match='non-finite'):
    inception.check_images(np.full((1, 8, 8, 3), np.nan, np.float32))
  inception.check_images(jnp.ones((1, 5, 7, 1)))


def _torch_bilinear(image, size):
  """F.interpolate(mode='bilinear', align_corners=False) in numpy: (H, W) -> (size, size)."""
  def axis_weights(n_in):
    src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((size, n_in))
    np.add.at(m, (np.arange(size), lo), 1 - (src - lo))
    np.add.at(m, (np.arange(size), hi), src - lo)
    return m
  return axis_weights(image.shape[0]) @ image @ axis_weights(image.shape[1]).T


@pytest.mark.parametrize('height,width', [(32, 32), (7, 400)])     # up- and downsampling
def test_preprocess_matches_pytorch_fid_resize_and_range(height, width):
  rng = np.random.default_rng(1)
  q = rng.integers(0, 256, (1, height, width, 1), dtype=np.uint8)
  x = np.asarray(jax.jit(inception.preprocess)(q))
  assert x.shape == (1, 299, 299, 3)
  expected = 2 * _torch_bilinear(q[0, :, :, 0] / 255.0, 299) - 1
  for channel in range(3):                                  # grey is repeated to RGB
    np.testing.assert_allclose(x[0, :, :, channel], expected, atol=1e-4)   # float32 positions


def test_features_of_a_small_batch(weights_file):
  variables = inception.load_variables(weights_file)
  features = inception.get_feature_fn(variables, outputs=('pool_3', 'logits', 'logits_unbiased'))
  q = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda name, *_, **__: compiles.append(name) if name.endswith('backend_compile_duration')
      else None)
  out = features(q)
  before = len(compiles)
  again = features(q[::-1])
  assert len(compiles) == before                             # same shape: no recompilation
  assert out['pool_3'].shape == (2, 2048) and out['logits'].shape == (2, 1008)
  assert np.isfinite(out['pool_3']).all() and np.ptp(out['pool_3']) > 0
  assert (out['pool_3'] >= 0).all()                          # an average of ReLU outputs
  np.testing.assert_allclose(again['pool_3'], out['pool_3'][::-1], rtol=1e-5, atol=1e-6)
  kernel = np.asarray(variables['params']['fc']['kernel'], np.float64)
  bias = np.asarray(variables['params']['fc']['bias'], np.float64)
  pool = out['pool_3'].astype(np.float64)
  np.testing.assert_allclose(out['logits_unbiased'], pool @ kernel, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(out['logits'], pool @ kernel + bias, rtol=1e-4, atol=1e-3)
  with pytest.raises(DataError, match='Unknown Inception outputs'):
    inception.get_feature_fn(variables, outputs=('pool3',))


# --- Reference statistics (evaluation.reference_stats) --------------------------------------

def _image_folder(root, n=10, size=8):
  """n random RGB PNGs of size x size (so the pipeline's resize/crop keeps them)."""
  root.mkdir()
  rng = np.random.default_rng(7)
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        root / f'img{i:02d}.png')
  return sorted(str(p) for p in root.iterdir())


def _folder_config(root, tmp_path):
  config = base.get_base_config()
  config.data.dataset = 'folder'
  config.data.path = str(root)
  config.data.image_size = 8
  config.data.centered = True            # the model's range must not leak into the statistics
  config.data.random_flip = True
  config.data.uniform_dequantization = True
  config.eval.batch_size = 4             # 10 images: the last batch holds 2
  config.eval.stats_path = str(tmp_path / 'stats.npz')
  return config


def _pixels_as_features(images):
  return {'pool_3': np.asarray(images, np.float32).reshape(len(images), -1)}


def test_dataset_statistics_follow_the_conventions_and_are_cached(tmp_path):
  files = _image_folder(tmp_path / 'images')
  config = _folder_config(tmp_path / 'images', tmp_path)
  feats = reference_stats.dataset_features(config, _pixels_as_features)
  # Every image once, in order, unflipped, as its uint8 pixels / 255 (no dequantisation).
  expected = np.stack([np.asarray(Image.open(f).convert('RGB')) for f in files])
  np.testing.assert_array_equal(np.rint(feats * 255), expected.reshape(len(files), -1))
  np.testing.assert_allclose(feats * 255, np.rint(feats * 255), atol=1e-4)

  stats = reference_stats.get_reference_stats(config, feature_fn=_pixels_as_features)
  mu, sigma = metrics.feature_statistics(expected.reshape(len(files), -1) / 255.0)
  np.testing.assert_allclose(stats.mu, mu, rtol=1e-5)
  np.testing.assert_allclose(stats.sigma, sigma, rtol=1e-4, atol=1e-7)
  assert stats.num_examples == len(files)

  def fail(images):
    raise AssertionError('the cached statistics should have been read')
  cached = reference_stats.get_reference_stats(config, feature_fn=fail)
  np.testing.assert_array_equal(cached.sigma, stats.sigma)
  np.testing.assert_array_equal(cached.pool_3, stats.pool_3)


def test_stats_files_of_the_paper_and_pytorch_fid_are_read(tmp_path):
  pool_3 = np.random.default_rng(8).standard_normal((30, 5)).astype(np.float32)
  np.savez(tmp_path / 'cifar10_stats.npz', pool_3=pool_3)        # the paper's released format
  stats = reference_stats.load_stats(str(tmp_path / 'cifar10_stats.npz'))
  mu, sigma = metrics.feature_statistics(pool_3)
  np.testing.assert_array_equal(stats.mu, mu)
  np.testing.assert_array_equal(stats.sigma, sigma)
  assert stats.num_examples == 30 and stats.pool_3.shape == (30, 5)
  np.savez(tmp_path / 'fid.npz', mu=mu, sigma=sigma)             # pytorch-fid's --save-stats
  stats = reference_stats.load_stats(str(tmp_path / 'fid.npz'))
  assert stats.pool_3 is None and stats.num_examples is None
  np.testing.assert_array_equal(stats.sigma, sigma)
  np.savez(tmp_path / 'other.npz', samples=pool_3)
  with pytest.raises(DataError, match=r"holds \['samples'\]"):
    reference_stats.load_stats(str(tmp_path / 'other.npz'))
  with pytest.raises(MissingFileError, match='does not exist'):
    reference_stats.load_stats(str(tmp_path / 'missing.npz'))
