"""``bpd.evaluate``: checkpoints -> likelihoods on 8 devices, against closed form.

A freshly initialised MLP has a zero output layer, so its VP score is exactly 0 and the
probability flow is dx/dt = -beta(t) x / 2: x(T) = x exp(-(B(T) - B(eps)) / 2) and
div = -beta(t) D / 2, hence log p_eps(x) = log N(x(T); 0, I) - D (B(T) - B(eps)) / 2 in closed
form. This checks the real restore -> score_fn -> pmap -> masking -> bits/dim path end to end.
"""
from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import stats

from configs import base, default_toy
from score_sde import checkpointing, datasets, models, sde_lib, train_state
from score_sde.evaluation import bpd as bpd_lib


def _zero_score_logp(x, sde, eps):
  """log p_eps(x) (B,) of the zero-score VP flow (module docstring), float64 on the host."""
  x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  decay = sde.integrated_beta(1.0) - sde.integrated_beta(eps)
  z = x * math.exp(-decay / 2)
  return stats.norm.logpdf(z).sum(-1) - x.shape[1] * decay / 2


def _save_checkpoints(config, workdir, steps):
  model = models.get_model(config)
  state = train_state.init_train_state(config, model, train_state.get_optimizer(config.optim),
                                    jax.random.PRNGKey(0))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), async_save=False,
                                    keep_period=config.training.snapshot_freq)   # as training
  for step in steps:
    ckpt.save(step, state.replace(step=jnp.asarray(step, jnp.int32)))
  ckpt.close()


def toy_config():
  config = default_toy.get_config()
  config.data.dataset = 'gaussian_mixture'
  config.training.sde = 'vpsde'
  config.training.snapshot_freq = 8
  config.model.nf = 16
  config.model.num_layers = 1
  config.eval.enable_bpd = True
  config.eval.batch_size = 64
  config.eval.bpd_num_examples = 128
  return config


def test_toy_nll_in_nats_matches_closed_form(tmp_path):
  config = toy_config()
  config.eval.begin_ckpt = 2      # snapshot 2 = step 16: step 8 is skipped
  _save_checkpoints(config, tmp_path, [8, 16])
  results = bpd_lib.evaluate(config, str(tmp_path))
  assert list(results) == [16]
  with open(tmp_path / 'eval' / 'bpd_16.json') as f:
    saved = json.load(f)
  assert saved['metric'] == 'nll_nats' and saved['num_examples'] == 128 and saved['step'] == 16

  it = datasets.get_dataset(config, 'test', num_local_devices=8, batch_size=64)
  x = np.concatenate([next(it)['image'].reshape(-1, 2) for _ in range(2)])
  expected = -_zero_score_logp(x, sde_lib.get_sde(config), config.eval.likelihood_eps)
  assert saved['mean'] == pytest.approx(expected.mean(), abs=1e-3)
  assert saved['std_err'] == pytest.approx(expected.std(ddof=1) / math.sqrt(128), abs=1e-6)
  assert saved['mean_nfe'] > 0


class ZeroImageModel(nn.Module):
  """A per-pixel Dense with zero weights: output 0 (score 0), cheap to compile on images."""

  @nn.compact
  def __call__(self, x, labels, train: bool = False):
    del labels, train
    return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(x)


def test_image_bpd_on_mock_cifar10_matches_closed_form(tmp_path, monkeypatch):
  """37 examples x 2 repeats in batches of 16 on 8 devices: the padded last batch is masked."""
  monkeypatch.setitem(models.MODELS, 'zero_image', lambda config: ZeroImageModel())
  config = base.get_base_config()
  config.model.name = 'zero_image'
  config.data.dataset = 'cifar10'
  config.data.centered = True
  config.data.random_flip = False
  config.training.sde = 'vpsde'
  config.training.snapshot_freq = 4
  config.eval.enable_bpd = True
  config.eval.batch_size = 16
  config.eval.num_repeats = 2
  _save_checkpoints(config, tmp_path, [4])
  with tfds.testing.mock_data(num_examples=37, policy=tfds.testing.MockPolicy.USE_CODE):
    result = bpd_lib.evaluate(config, str(tmp_path))[4]
    it = datasets.get_dataset(config, 'test', num_local_devices=8, batch_size=16,
                              evaluation=True, num_repeats=2, uniform_dequantization=True)
    batches = list(it)
  x = np.concatenate([b['image'].reshape((-1, 32, 32, 3))[b['mask'].reshape(-1)] for b in batches])
  assert x.shape[0] == result['num_examples'] == 74
  dim = 32 * 32 * 3
  logp = _zero_score_logp(x, sde_lib.get_sde(config), config.eval.likelihood_eps)
  expected = -logp / (dim * math.log(2)) + 7.0     # centered data: +8 - 1
  assert result['metric'] == 'bpd'
  assert result['mean'] == pytest.approx(expected.mean(), abs=1e-3)


def test_steps_to_evaluate_uses_the_papers_snapshot_numbering():
  assert bpd_lib.steps_to_evaluate([5, 10, 20, 25, 30], 2, 3, 10) == [20, 25, 30]
  assert bpd_lib.steps_to_evaluate([5, 10, 20], 1, None, 10) == [10, 20]


def test_bpd_disabled_raises(tmp_path):
  config = toy_config()
  config.eval.enable_bpd = False
  with pytest.raises(ValueError, match='enable_bpd'):
    bpd_lib.evaluate(config, str(tmp_path))


def test_no_checkpoint_in_range_lists_available_steps(tmp_path):
  config = toy_config()
  _save_checkpoints(config, tmp_path, [4])
  with pytest.raises(checkpointing.CheckpointError, match=r'available steps: \[4\]'):
    bpd_lib.evaluate(config, str(tmp_path))


def test_unknown_split_raises(tmp_path):
  config = toy_config()
  config.eval.bpd_dataset = 'validation'
  _save_checkpoints(config, tmp_path, [8])
  with pytest.raises(ValueError, match="'train', 'test'"):
    bpd_lib.evaluate(config, str(tmp_path))
