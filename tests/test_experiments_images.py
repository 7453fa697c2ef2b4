"""The experiment runner on images at tiny size: the 8x8 digits, digits measure + bits/dim, FID on
stand-in features interrupted and resumed, the CIFAR-10 spec's plan, and bad input."""
from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from configs import default_digits
from configs.tiny import ddpmpp
import helpers
from score_sde import experiments
from score_sde.errors import ConfigError, MissingFileError
from score_sde.evaluation import digits_classifier, metrics, reference_stats


# Tiny DDPM++ at the digits' native 8 px, 2 training steps; bpd on 8 test digits, loose tolerances.
TINY_DIGITS = {
    'model.nf': 4, 'training.n_iters': 2, 'training.snapshot_freq': 2,
    'training.snapshot_freq_for_preemption': 2, 'training.log_freq': 2,
    'training.eval_freq': 100, 'training.snapshot_sampling': False, 'eval.batch_size': 8,
    'eval.bpd_num_examples': 8, 'eval.likelihood_rtol': 1e-2, 'eval.likelihood_atol': 1e-2,
}


def tiny_digits_config():
  config = default_digits.on_digits(ddpmpp.get_config(), 8)
  for path, value in TINY_DIGITS.items():
    helpers.set_path(config, path, value)
  return config


@pytest.fixture(scope='module')
def classifier_path(tmp_path_factory):
  """A random-weight digits classifier in the cache file the runner reads (training the real
  one takes seconds to minutes; what is tested here is the plumbing)."""
  rng = np.random.default_rng(0)
  dims = (digits_classifier.IMAGE_SIZE ** 2,) + digits_classifier.HIDDEN + (10,)
  clf = digits_classifier.DigitsClassifier(
      tuple(rng.normal(0, d_in ** -0.5, (d_in, d_out)) for d_in, d_out in zip(dims, dims[1:])),
      tuple(np.zeros(d) for d in dims[1:]))
  path = str(tmp_path_factory.mktemp('clf') / 'digits_classifier.npz')
  digits_classifier.save(clf, path)
  return path


def tiny_spec(metrics_, variant: dict, **options):
  spec = ml_collections.ConfigDict()
  spec.base = tiny_digits_config()
  spec.train_axes = {'family': [{'name': 'vp', **variant}]}
  spec.samplers = {'dpm': {'method': 'dpm_solver', 'order': 2}}
  spec.nfe = [2]
  spec.seeds = [0, 1]
  spec.metrics = list(metrics_)
  spec.metric_options = options
  spec.num_samples = 12
  spec.batch_size = 8                  # two rounds, the second cut to 4
  return spec


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory, classifier_path):
  """The digits measure and bpd of a tiny model trained for 2 steps by the runner; the other
  tests evaluate that model (a variant naming its workdir: nothing is trained again)."""
  workdir = tmp_path_factory.mktemp('digits_run')
  spec = tiny_spec(['digits_fd', 'digits_confidence', 'bpd'], {},
                   digits_classifier=classifier_path)
  return workdir, experiments.run(spec, str(workdir))


def test_digits_measure_and_bpd_end_to_end(digits_run, classifier_path):
  workdir, rows = digits_run
  assert [(r['family'], r['sampler'], r['nfe'], r['seeds']) for r in rows] == [
      ('vp', 'dpm', 2, 2)]
  # The table's value is the mean over seeds of what the stored samples give.
  clf = digits_classifier.load_or_train(classifier_path)
  reference = digits_classifier.split_images('train')[0]
  values = []
  for seed in (0, 1):
    samples = np.load(workdir / 'cells' / f'family-vp__dpm__nfe2__seed{seed}.npy')
    assert samples.shape == (12, 8, 8, 1) and samples.dtype == np.uint8
    values.append(digits_classifier.quality(
        clf, digits_classifier.to_classifier_input(samples), reference)['frechet'])
  assert rows[0]['digits_fd'] == pytest.approx(np.mean(values), rel=1e-9)
  assert 0.1 <= rows[0]['digits_confidence'] <= 1.0
  assert np.isfinite(rows[0]['bpd']) and rows[0]['bpd'] > 0 and rows[0]['bpd_se'] > 0
  table = (workdir / 'results.md').read_text()
  assert 'uniform dequantisation' in table and '| vp | dpm | 2 |' in table
  for picture in ('metric_vs_nfe.png', 'samples.png'):
    assert os.path.getsize(workdir / 'plots' / picture) > 0


def trained_model(digits_run) -> dict:
  return {'workdir': str(digits_run[0] / 'models' / 'family-vp')}


def stand_in_features(images):
  """A tiny stand-in for the Inception network: fixed projections of the uint8 pixels."""
  x = images.reshape(len(images), -1).astype(np.float32) / 255.0
  w = np.random.default_rng(0).normal(size=(x.shape[1], 13)).astype(np.float32)
  return {'pool_3': x @ w[:, :8], 'logits_unbiased': x @ w[:, 8:]}


class Interrupt(Exception):
  pass


def test_fid_interrupted_and_resumed_without_redoing_cells(digits_run, tmp_path):
  stats_path = str(tmp_path / 'digits_stats.npz')
  spec = tiny_spec(['fid', 'kid', 'is'], trained_model(digits_run), kid_subsets=4,
                   kid_subset_size=6)
  spec.base.eval.stats_path = stats_path
  workdir = str(tmp_path / 'run')

  def stop_after_first(cell, result):
    raise Interrupt

  with pytest.raises(Interrupt):
    experiments.run(spec, workdir, on_cell=stop_after_first, feature_fn=stand_in_features)
  done = {p: os.stat(os.path.join(workdir, 'cells', p)).st_mtime_ns
          for p in os.listdir(os.path.join(workdir, 'cells')) if p.endswith('.json')}
  assert len(done) == 1
  assert os.path.exists(stats_path)    # reference statistics computed once, cached

  resumed = []
  rows = experiments.run(spec, workdir, on_cell=lambda c, r: resumed.append(c.name),
                         feature_fn=stand_in_features)
  assert len(resumed) == 1 and resumed[0] + '.json' not in done
  assert {p: os.stat(os.path.join(workdir, 'cells', p)).st_mtime_ns for p in done} == done
  samples = np.load(os.path.join(workdir, 'cells', resumed[0] + '.npy'))
  ref = reference_stats.load_stats(stats_path)
  mu, sigma = metrics.feature_statistics(stand_in_features(samples)['pool_3'])
  with open(os.path.join(workdir, 'cells', resumed[0] + '.json')) as f:
    stored = json.load(f)
  assert stored['metrics']['fid']['value'] == pytest.approx(
      metrics.frechet_distance(mu, sigma, ref.mu, ref.sigma), rel=1e-9)
  assert rows[0]['seeds'] == 2 and rows[0]['fid_se'] > 0


def test_cifar10_spec_dry_run_prints_its_plan(capsys):
  text = experiments.dry_run('configs/experiments/sde_variants_cifar10.py')
  assert text == capsys.readouterr().out.strip()
  assert '3 models' in text and '27 cells' in text
  assert '1,350,000 samples' in text and '1,300,001 steps' in text


@pytest.mark.parametrize('change, error, message', [
    (lambda s, t: s.update(metrics=['nll']), ConfigError, r"'nll' is not an image metric"),
    (lambda s, t: s.update(metrics=['fid']), MissingFileError,
     r'Inception weights.*pytorch-fid.*convert_inception'),
    (lambda s, t: s.update(num_samples=12, batch_size=7), ConfigError,
     r'spec.batch_size=7 .*devices'),
    (lambda s, t: s.train_axes.update(family=[{'name': 'vp', 'workdir': str(t / 'none')}]),
     ConfigError, r'no checkpoint'),
    (lambda s, t: s.base.data.update(image_size=16), ConfigError, r'data.image_size'),
])
def test_bad_image_specs_fail_in_one_line_writing_nothing(digits_run, classifier_path, tmp_path,
                                                          change, error, message):
  spec = tiny_spec(['digits_fd'], trained_model(digits_run), digits_classifier=classifier_path)
  change(spec, tmp_path)
  with pytest.raises(error, match=message) as info:
    experiments.run(spec, str(tmp_path / 'run'))
  assert '\n' not in str(info.value)
  assert not os.path.exists(tmp_path / 'run')
