"""The evaluation loop: loss + samples + metrics per checkpoint, resumable, on 8 devices."""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base, default_toy
from score_sde import checkpointing, generation, models, train_state
from score_sde.errors import ConfigError, MissingFileError
from score_sde.evaluation import loop, metrics, reference_stats, toy_metrics


def _save_checkpoints(config, workdir, steps):
  model = models.get_model(config)
  state = train_state.init_train_state(config, model, train_state.get_optimizer(config.optim),
                                    jax.random.PRNGKey(0))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), async_save=False,
                                    keep_period=config.training.snapshot_freq)
  for step in steps:
    ckpt.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
  ckpt.close()


def toy_config():
  config = default_toy.get_config()
  config.data.dataset = 'gaussian_mixture'
  config.training.snapshot_freq = 8
  config.model.nf = 8
  config.model.num_layers = 1
  config.sampling.method = 'pc'
  config.sampling.num_steps = 4
  config.eval.enable_sampling = True
  config.eval.batch_size = 64
  config.eval.num_samples = 128          # two rounds of 64
  config.eval.loss_num_examples = 128
  config.eval.toy_metrics = ('nll', 'sliced_wasserstein')
  return config


def test_toy_loop_resumes_without_redoing_rounds_or_checkpoints(tmp_path, monkeypatch):
  config = toy_config()
  _save_checkpoints(config, tmp_path, [8, 16])
  real_round, calls = generation.draw, []

  def preempted_on_fourth_round(*args):
    calls.append(1)
    if len(calls) == 4:   # step 16's second round
      raise KeyboardInterrupt
    return real_round(*args)

  monkeypatch.setattr(generation, 'draw', preempted_on_fourth_round)
  with pytest.raises(KeyboardInterrupt):
    loop.evaluate(config, str(tmp_path))
  out = tmp_path / 'eval'
  assert (out / 'report_8.json').exists() and not (out / 'report_16.json').exists()
  rounds_16 = next((out / 'ckpt_16').glob('samples_*'))   # keyed by the sampling settings
  assert (rounds_16 / 'round_0.npz').exists() and list((out / 'ckpt_16').glob('loss_*.json'))
  done = {p: os.stat(p).st_mtime_ns for p in [out / 'report_8.json', rounds_16 / 'round_0.npz']}

  calls.clear()
  monkeypatch.setattr(generation, 'draw', lambda *a: calls.append(1) or real_round(*a))
  reports = loop.evaluate(config, str(tmp_path))
  assert len(calls) == 1                      # only round 1 of step 16 was left
  assert {p: os.stat(p).st_mtime_ns for p in done} == done
  assert sorted(reports) == [8, 16]

  # The report holds what the stored samples give.
  with open(out / 'report_16.json') as f:
    report = json.load(f)
  samples = np.concatenate([np.load(rounds_16 / f'round_{r}.npz')['samples'] for r in (0, 1)])
  assert samples.shape == (128, 2) and report['sampling']['num_samples'] == 128
  assert report['sampling']['nfe'] == 4
  nll, nll_se = toy_metrics.nll(samples, toy_metrics.DENSITIES['gaussian_mixture']())
  assert report['sampling']['nll']['value'] == pytest.approx(nll, rel=1e-6)
  assert report['loss']['num_examples'] == 128 and np.isfinite(report['loss']['mean'])
  summary = (out / 'summary.md').read_text()
  assert summary.splitlines()[0] == ('| step | loss | nfe | nll | sliced_wasserstein |')
  assert summary.count('\n') == 4 and '| 16 |' in summary


class ZeroImageModel(nn.Module):
  @nn.compact
  def __call__(self, x, labels, train: bool = False):
    del labels, train
    return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(x)


def image_config(tmp_path):
  config = base.get_base_config()
  config.model.name = 'zero_image'
  config.data.dataset = 'cifar10'
  config.data.image_size = 8
  config.data.centered = True
  config.training.snapshot_freq = 4
  config.sampling.num_steps = 2
  config.eval.enable_loss = False
  config.eval.enable_sampling = True
  config.eval.batch_size = 16
  config.eval.num_samples = 24           # two rounds, the second cut to 8
  config.eval.stats_path = str(tmp_path / 'ref_stats.npz')
  return config


def stand_in_features(images):
  """A tiny stand-in for the Inception network: fixed projections of the uint8 pixels."""
  assert images.dtype == np.uint8
  x = images.reshape(len(images), -1).astype(np.float32) / 255.0
  w = np.random.default_rng(0).normal(size=(x.shape[1], 13)).astype(np.float32)
  return {'pool_3': x @ w[:, :8], 'logits_unbiased': x @ w[:, 8:]}


def test_image_loop_computes_fid_kid_is_from_injected_features(tmp_path, monkeypatch):
  monkeypatch.setitem(models.MODELS, 'zero_image', lambda config: ZeroImageModel())
  config = image_config(tmp_path)
  _save_checkpoints(config, tmp_path, [4])
  ref = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
  reference_stats.save_stats(config.eval.stats_path, reference_stats.from_features(ref))
  report = loop.evaluate(config, str(tmp_path), feature_fn=stand_in_features)[4]['sampling']
  rounds_dir = next((tmp_path / 'eval' / 'ckpt_4').glob('samples_*'))
  rounds = [np.load(rounds_dir / f'round_{r}.npz') for r in (0, 1)]
  pool_3 = np.concatenate([r['pool_3'] for r in rounds])[:24]
  assert rounds[0]['samples'].dtype == np.uint8 and rounds[0]['samples'].shape == (16, 8, 8, 3)
  mu, sigma = metrics.feature_statistics(pool_3)
  ref_mu, ref_sigma = metrics.feature_statistics(ref)
  assert report['fid']['value'] == pytest.approx(
      metrics.frechet_distance(mu, sigma, ref_mu, ref_sigma), rel=1e-9)
  assert report['num_samples'] == 24 and {'kid', 'is'} <= set(report)
  logits = np.concatenate([r['logits_unbiased'] for r in rounds])[:24]
  assert report['is']['value'] == pytest.approx(metrics.inception_score(logits, 10)[0])


def test_missing_inception_weights_fail_before_any_work(tmp_path, monkeypatch):
  monkeypatch.setitem(models.MODELS, 'zero_image', lambda config: ZeroImageModel())
  config = image_config(tmp_path)
  _save_checkpoints(config, tmp_path, [4])
  config.eval.inception_weights = str(tmp_path / 'nowhere.npz')
  with pytest.raises(MissingFileError, match='convert_inception'):
    loop.evaluate(config, str(tmp_path))
  assert not (tmp_path / 'eval').exists()


def test_empty_checkpoint_range_and_nothing_enabled_are_config_errors(tmp_path):
  config = toy_config()
  _save_checkpoints(config, tmp_path, [8])
  config.eval.begin_ckpt = 2
  with pytest.raises(ConfigError, match=r'begin_ckpt=2.*available steps: \[8\]'):
    loop.evaluate(config, str(tmp_path))
  config.eval.enable_loss = config.eval.enable_sampling = False
  with pytest.raises(ConfigError, match='Nothing to evaluate'):
    loop.evaluate(config, str(tmp_path))
  config.eval.enable_sampling = True
  config.eval.toy_metrics = ('nll', 'fid')
  with pytest.raises(ConfigError, match="'fid'"):
    loop.evaluate(config, str(tmp_path))
