"""The scikit-learn digits end to end: the dataset and its split, a discrete DDPM trained on them
through ``train_and_evaluate`` (loss falls, resumes, samples with every sampler), the run exported
in the paper's checkpoint format and sampled by ``sample.py --paper_checkpoint``, the digits
classifier's metric, and the bad inputs that must fail clearly."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import tiny_archs_digits
from configs import default_digits
from configs.vp import digits_ddpmpp_continuous
from score_sde.checkpointing import paper
from score_sde import checkpointing, datasets, models, training
from score_sde.datasets import digits
from score_sde.errors import ConfigError, DataError
from score_sde.evaluation import digits_classifier
from test_paper_checkpoint import _write_paper_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_split_is_fixed_stratified_and_disjoint():
  (x_train, _), (x_test, y_test) = digits.load_split('train'), digits.load_split('test')
  assert x_train.shape == (1527, 16, 16, 1) and x_test.shape == (270, 16, 16, 1)
  assert x_train.dtype == np.uint8 and x_test.max() == 255 and y_test.dtype == np.int32
  idx = digits.split_indices()
  assert not set(idx['train']) & set(idx['test'])
  counts = np.bincount(y_test, minlength=10) / np.bincount(digits.load_all()[1], minlength=10)
  np.testing.assert_allclose(counts, 0.15, atol=0.01)     # stratified
  # 8x8 at 8 px is the data itself, rescaled to 0..255.
  native, _ = digits.load_split('test', image_size=8)
  np.testing.assert_array_equal(native[..., 0], digits.load_all()[0][idx['test']])


def test_iterator_yields_scaled_labelled_batches_and_resumes():
  config = digits_ddpmpp_continuous.get_config()
  it = datasets.get_dataset(config, 'train', num_local_devices=2, batch_size=8)
  batch = next(it)
  assert batch['image'].shape == (2, 4, 8, 8, 1) and batch['label'].shape == (2, 4)
  assert batch['image'].min() >= -1.0 and batch['image'].max() <= 1.0
  state = it.get_state()
  expected = next(it)
  it.set_state(state)
  np.testing.assert_array_equal(next(it)['image'], expected['image'])


def test_bad_inputs_fail_clearly():
  config = digits_ddpmpp_continuous.get_config()
  config.data.num_classes = 12
  with pytest.raises(ConfigError, match='num_classes = 12.*10 classes'):
    datasets.get_dataset(config, 'train')
  config = digits_ddpmpp_continuous.get_config()
  config.data.num_channels = 3
  with pytest.raises(ConfigError, match='grey'):
    datasets.get_dataset(config, 'train')
  with pytest.raises(DataError, match="'validation'"):
    digits.load_split('validation')
  config = digits_ddpmpp_continuous.get_config()
  config.data.image_size, config.model.ch_mult = 12, (1, 2, 2, 2)
  with pytest.raises(ConfigError, match='image_size = 12.*multiple of 8'):
    models.get_model(config)
  config = default_digits.on_digits(tiny_archs_digits.tiny_digits_config('ncsnv2', 2), 7)
  with pytest.raises(ConfigError, match='image_size = 7.*multiple of 2'):
    models.get_model(config)


# The discrete chain's own predictor, a predictor + corrector pair, and a fast solver. Every
# sampler on every tiny architecture: benchmarks/tiny_archs_digits.py (RESULTS.md, Digits).
SAMPLERS = ('pc_ancestral', 'pc_reverse_diffusion_langevin', 'dpm_solver')


@pytest.fixture(scope='module')
def ddpm_run(tmp_path_factory):
  """A tiny discrete DDPM: 2 x 10 steps on 8x8 digits (resumed once), three samplers 25 steps."""
  workdir = str(tmp_path_factory.mktemp('digits') / 'ddpm')
  samplers = {name: tiny_archs_digits.SAMPLERS[name] for name in SAMPLERS}
  return workdir, tiny_archs_digits.run_arch('ddpm', workdir, n_iters=20, num_steps=25,
                                             samplers=samplers, evaluate=False)


def test_discrete_ddpm_trains_resumes_and_samples(ddpm_run):
  _, result = ddpm_run
  assert (result.sde, result.continuous) == ('vpsde', False)
  assert result.loss_final < 0.95 * result.loss_init, (result.loss_init, result.loss_final)
  assert set(result.samplers) == set(SAMPLERS)
  assert all(finite for _, finite in result.samplers.values()), result.samplers
  assert result.samplers['pc_ancestral'][0] == 25
  assert result.samplers['pc_reverse_diffusion_langevin'][0] == 50


def test_data_shape_differing_from_the_checkpoint_fails_before_anything_is_written(ddpm_run):
  workdir, result = ddpm_run
  config = result.config.copy_and_resolve_references()
  config.data.num_channels = 3
  with pytest.raises(ConfigError, match="data.num_channels = 1 there, 3 here"):
    checkpointing.check_run_config(config, workdir)   # sample.py's restore path
  with open(os.path.join(workdir, 'config.json')) as f:
    before = f.read()
  config = result.config.copy_and_resolve_references()
  config.data.image_size = 16
  with pytest.raises(ConfigError, match='data.image_size = 8 there, 16 here'):
    training.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == before and json.loads(before)['data']['num_channels'] == 1


def test_sample_py_reads_a_paper_format_checkpoint_of_a_model_trained_here(ddpm_run, tmp_path):
  _, result = ddpm_run
  path = tmp_path / 'checkpoints' / 'checkpoint_20'
  path.parent.mkdir()
  _write_paper_state(path, result.ema_params, result.ema_params, step=20)
  loaded = paper.load_paper_checkpoint(str(path.parent), result.config)
  for a, b in zip(jax.tree_util.tree_leaves(loaded.ema_params),
                  jax.tree_util.tree_leaves(result.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  overrides = ['--config.data.dataset=digits', '--config.data.num_channels=1',
               '--config.data.image_size=8', '--config.data.random_flip=False',
               '--config.sampling.method=pc', '--config.sampling.predictor=ancestral_sampling',
               '--config.sampling.num_steps=25', '--config.sampling.batch_size=4']
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ['SCORE_SDE_TEST_XLA_FLAGS'])
  run = subprocess.run([sys.executable, 'sample.py', '--config=configs/tiny/ddpm.py',
                        f'--workdir={tmp_path}', f'--paper_checkpoint={path.parent}',
                        '--num_samples=4', *overrides], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  samples = np.load(tmp_path / 'samples' / 'samples_step20_pc_nfe25_seed0.npz')['samples']
  assert samples.shape == (4, 8, 8, 1) and np.isfinite(samples).all()
  assert os.path.exists(tmp_path / 'samples' / 'samples_step20_pc_nfe25_seed0.png')


def test_classifier_metric_separates_real_digits_from_noise(tmp_path):
  clf = digits_classifier.train(max_iter=30)
  x_test, y_test = digits_classifier.split_images('test')
  x_train, _ = digits_classifier.split_images('train')
  assert clf.accuracy(x_test, y_test) > 0.9
  real = digits_classifier.quality(clf, x_test, x_train)
  noise = digits_classifier.quality(clf, np.random.default_rng(0).random(x_test.shape), x_train)
  assert real['frechet'] < 0.05 * noise['frechet'] and real['confidence'] > noise['confidence']
  same = digits_classifier.quality(clf, x_train, x_train)
  assert abs(same['frechet']) < 1e-6
  # 8 px images (the digits' native size, what the digits configs sample) are scored as the
  # 16 px data is made from them: the real 8 px test digits score as the 16 px ones.
  native = digits.load_split('test', image_size=8)[0]
  np.testing.assert_allclose(clf.features(native / 255.0), clf.features(x_test), atol=1e-12)
  with pytest.raises(DataError, match=r'\(n, size, size\[, 1\]\) images .* got shape \(2, 8, 6\)'):
    clf.features(np.zeros((2, 8, 6)))
