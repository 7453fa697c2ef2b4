"""unCLIP on the digits: the contrastive pair (symmetric InfoNCE against closed form, its
training job, export and held-out metrics), the decoder's embedding conditioning, the diffusion
prior over embeddings, and their one-line errors."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from configs.unclip import digits as unclip_digits
from configs.unclip import digits_prior as unclip_digits_prior
from score_sde import api, config_checks, contrastive_training, datasets, losses, models
from score_sde import reporting, sde_lib, train_state, unclip
from score_sde.errors import ConfigError, DataError
from score_sde.models import prompts
from score_sde.models import utils as mutils
from score_sde.sampling import guidance
from score_sde.checkpointing import contrastive as ckpt_contrastive
from score_sde.evaluation import zero_shot
from score_sde.models import contrastive


def test_clip_loss_closed_forms_and_symmetry():
  b, d = 4, 6
  v = contrastive.normalize(jax.random.normal(jax.random.PRNGKey(0), (b, d)))
  u = contrastive.normalize(jax.random.normal(jax.random.PRNGKey(1), (b, d)))
  grad = jax.grad(contrastive.clip_loss, argnums=(0, 1))

  @jax.jit
  def found():
    eye = jnp.eye(b, d)
    return {'s0': contrastive.clip_loss(eye, eye, 0.0),
            's1': contrastive.clip_loss(eye, eye, 1.0), 's5': contrastive.clip_loss(eye, eye, 5.0),
            'two': contrastive.clip_loss(jnp.eye(2), jnp.eye(2), 2.0),
            'vu': contrastive.clip_loss(v, u, 3.0), 'uv': contrastive.clip_loss(u, v, 3.0),
            'grad_vu': grad(v, u, 3.0), 'grad_uv': grad(u, v, 3.0)}
  f = found()
  # s = 0: every pair is equally likely, log B on both sides.
  np.testing.assert_allclose(f['s0'], math.log(b), rtol=1e-6)
  # Orthonormal matched pairs: logits s I, loss log(1 + (B - 1) e^-s).
  for s in (1, 5):
    np.testing.assert_allclose(f[f's{s}'], math.log(1 + (b - 1) * math.exp(-s)), rtol=1e-5)
  # By hand, B = 2, s = 2: logits [[2, 0], [0, 2]], each row's true pair has e^2 / (e^2 + 1).
  np.testing.assert_allclose(f['two'], -math.log(math.exp(2) / (math.exp(2) + 1)), rtol=1e-5)
  # Swapping the two sides transposes the logits: the same loss, the gradients trade places.
  np.testing.assert_allclose(f['vu'], f['uv'], rtol=1e-6)
  (gv, gu), (gu_swapped, gv_swapped) = f['grad_vu'], f['grad_uv']
  np.testing.assert_allclose(gv, gv_swapped, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(gu, gu_swapped, rtol=1e-5, atol=1e-7)


def test_zero_shot_and_retrieval_on_hand_made_embeddings():
  prompts = np.eye(3)
  images = np.array([[1, 0.1, 0], [0, 1, 0], [0.2, 0, 1], [1, 0, 0]])
  assert zero_shot.zero_shot_accuracy(images, np.array([0, 1, 2, 2]), prompts) == 0.75
  found = zero_shot.retrieval_accuracy(images, prompts[[0, 1, 2, 0]], ['a', 'b', 'c', 'a'])
  assert found == {'image_to_caption': 1.0, 'caption_to_image': 1.0, 'distinct_captions': 3.0}
  found = zero_shot.retrieval_accuracy(images, prompts[[1, 0, 2, 1]], ['b', 'a', 'c', 'b'])
  assert found['image_to_caption'] == 0.25 and found['caption_to_image'] == 1 / 3


def tiny_unclip_config():
  """configs/unclip/digits.py with a tiny contrastive pair (8-d) trained 3 steps of batch 16 on
  the 8 px digits."""
  config = unclip_digits.get_config()
  c = config.contrastive
  c.embed_dim, c.text_width, c.text_heads, c.image_channels, c.image_hidden = 8, 16, 2, (4,), 16
  c.n_iters, c.batch_size, c.log_freq = 3, 16, 3
  config.eval.batch_size = 16
  config.data.image_size = 8   # the digits' native size: no resizing
  return config


@pytest.fixture(scope='module')
def trained_pair(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('unclip'))
  config = tiny_unclip_config()
  state = contrastive_training.train_contrastive(config, workdir)
  return config, workdir, state


def test_train_contrastive_exports_unit_embeddings_per_split_and_metrics(trained_pair):
  config, workdir, state = trained_pair
  assert int(state.step) == 3
  images = np.load(ckpt_contrastive.embeddings_path(workdir, 'image'))
  texts = np.load(ckpt_contrastive.embeddings_path(workdir, 'text'))
  for split, n in (('train', 1527), ('test', 270)):
    assert images[split].shape == texts[split].shape == (n, 1, 8)
    np.testing.assert_allclose(np.linalg.norm(images[split], axis=-1), 1.0, rtol=1e-5)
  # The checkpoint and pair.json restore the pair the export came from, without the config.
  trained = ckpt_contrastive.load_pair(workdir)
  test_images, _, found = contrastive_training.split_examples(
      contrastive_training.captions_config(config), 'test')
  np.testing.assert_allclose(trained.encode_images(test_images), images['test'][:, 0],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(trained.encode_text(found[:5]), texts['test'][:5, 0],
                             rtol=1e-5, atol=1e-6)
  metrics = reporting.read_json(os.path.join(ckpt_contrastive.contrastive_dir(workdir),
                                              'metrics.json'))
  assert 0 <= metrics['zero_shot_ensemble_accuracy'] <= 1 and metrics['distinct_captions'] > 10


def tiny_decoder_config():
  """The unCLIP decoder config with a tiny UNet (blocks of 8 and 16) reading 8-d embeddings
  through 2 tokens, the bare eps network."""
  config = unclip_digits.get_config()
  m = config.model
  m.unet_channels, m.precond, m.context_dim, m.unclip_tokens = (8, 16), 'paper', 8, 2
  return config


@pytest.fixture(scope='module')
def decoder():
  config = tiny_decoder_config()
  model = models.get_model(config)
  shapes = jax.eval_shape(lambda: mutils.init_params(jax.random.PRNGKey(0), model, (16, 16, 1)))
  return config, model, helpers.random_params(shapes)


def test_decoder_reads_the_embedding_in_the_time_embedding_and_as_tokens(decoder):
  config, model, params = decoder
  assert mutils.context_shape(model) == (1, 8)
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 1))
  t = jnp.array([300.0, 700.0])
  e = contrastive.normalize(jax.random.normal(jax.random.PRNGKey(3), (2, 1, 8)))
  run = jax.jit(lambda p, c: model.apply({'params': p}, x, t, c))
  # The null embedding leaves the projections' biases: the UNet with constant conditioning.
  tokens = jnp.broadcast_to(params['embedding_tokens']['bias'].reshape(1, 2, 8), (2, 2, 8))
  added = jnp.broadcast_to(params['embedding_time']['bias'], (2, 32))
  bare = jax.jit(lambda p: model.unet.apply({'params': p}, x, t, tokens, class_emb=added))
  np.testing.assert_allclose(run(params, jnp.zeros((2, 1, 8))), bare(params['unet']),
                             rtol=1e-5, atol=1e-5)
  # Each route alone carries the embedding.
  for route in ('embedding_tokens', 'embedding_time'):
    only = {**params, route: {**params[route], 'kernel': 0 * params[route]['kernel']}}
    assert np.max(np.abs(run(only, e) - run(only, jnp.zeros_like(e)))) > 1e-3, route


def test_decoder_guidance_at_w0_is_the_conditional_score_and_wm1_the_null_one(decoder):
  config, model, params = decoder
  sde = sde_lib.get_sde(config)
  score = lambda x, t, c: mutils.get_score_fn(sde, model, params, context=c)(x, t)
  x = jax.random.normal(jax.random.PRNGKey(4), (2, 16, 16, 1))
  t = jnp.array([0.3, 0.6])
  e = contrastive.normalize(jax.random.normal(jax.random.PRNGKey(5), (2, 1, 8)))
  null = jnp.zeros((1, 8))
  # A traced scale takes the batched [cond; null] path even at w = 0.
  guided = jax.jit(lambda w: guidance.context_free_score_fn(score, sde, e, null, w)(x, t))
  conditional, unconditional = jax.jit(lambda: (score(x, t, e), score(x, t, None)))()
  np.testing.assert_allclose(guided(jnp.float32(0)), conditional, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(guided(jnp.float32(-1)), unconditional, rtol=1e-4, atol=1e-4)


def tiny_prior_config(tmp_path, dim=8, n=12):
  """configs/unclip/digits_prior.py on random unit (n, 1, dim) image / text embeddings written
  to ``tmp_path``, with a 1-layer MLP of width 16 and batches of 4."""
  config = unclip_digits_prior.get_config()
  rng = np.random.default_rng(0)
  for side in ('image', 'text'):
    unit = lambda m: contrastive.normalize(rng.standard_normal((m, 1, dim))).astype(np.float32)
    np.savez(tmp_path / f'{side}.npz', train=unit(n), test=unit(n))
  config.data.path, config.data.context = str(tmp_path / 'image.npz'), str(tmp_path / 'text.npz')
  config.data.dim = config.model.context_dim = dim
  config.model.nf, config.model.num_layers = 16, 1
  config.training.batch_size = config.eval.batch_size = 4
  return config


def test_prior_learns_embeddings_given_the_text_embedding_in_one_train_step(tmp_path):
  config = tiny_prior_config(tmp_path)
  config_checks.check(config, 'train', 1)
  batch = next(datasets.get_dataset(config, 'train', num_local_devices=1))
  assert batch['image'].shape == (1, 4, 8) and batch['context'].shape == (1, 4, 1, 8)
  # The records are sqrt(D) e: unit RMS per coordinate.
  np.testing.assert_allclose(np.linalg.norm(batch['image'], axis=-1), np.sqrt(8), rtol=1e-5)
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  assert mutils.context_shape(model) == (1, 8)
  optimizer = train_state.get_optimizer(config.optim, config.training.n_iters)
  state = train_state.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))
  train_step, _ = losses.get_step_fns(config, sde, model, optimizer)
  one = jax.tree.map(lambda a: a[0], batch)
  new, metrics = jax.jit(train_step)(state, one, jax.random.PRNGKey(1))
  assert int(new.step) == 1 and np.isfinite(float(metrics['loss']))
  # The text embedding reaches the output (random weights: the zero-initialised output layer
  # has not moved in a warm-up step).
  params = helpers.random_params(jax.eval_shape(lambda: state.params))
  x, t = jnp.asarray(one['image']), jnp.full((4,), 0.5)
  score = lambda c: mutils.get_score_fn(sde, model, params, context=c)(x, t)
  assert score(jnp.asarray(one['context'])).shape == (4, 8)
  assert np.max(np.abs(score(jnp.asarray(one['context'])) - score(None))) > 1e-4


def _run(config, model, workdir='runs/w'):
  return api.Run(workdir=workdir, config=config, step=0, params=None,
                 sde=sde_lib.get_sde(config), model=model)


def test_unclip_bad_inputs_are_one_line(tmp_path, decoder, trained_pair):
  toy = helpers.tiny_toy_config()
  with pytest.raises(ConfigError, match=r"drive an unCLIP decoder \(model.name='unclip_decoder'\); "
                     r"the run in runs/w is model 'mlp'"):
    unclip.variations(_run(toy, models.get_model(toy)), None, np.zeros((1, 16, 16, 1)))
  config, model, _ = decoder
  with pytest.raises(DataError, match=r'The prior gives \(7,\) embeddings; the decoder in runs/w '
                     r'reads 8-d ones \(model.context_dim\)'):
    unclip.check_embeddings(np.zeros((3, 7)), _run(config, model), 'The prior')
  with pytest.raises(ConfigError, match='reads image embeddings, not prompts'):
    prompts.contexts(config, model, ['a seven'])
  bad = tiny_unclip_config()
  bad.contrastive.batch_size = 0
  with pytest.raises(ConfigError, match='contrastive.batch_size must be a positive integer, not 0'):
    contrastive_training.train_contrastive(bad, str(tmp_path / 'never'))
  assert not (tmp_path / 'never').exists()
  # A prior whose context is not the pair's embedding dimension: both named.
  prior = tiny_prior_config(tmp_path, dim=16)
  prior.contrastive.workdir = trained_pair[1]
  with pytest.raises(ConfigError, match=r'embeds prompts in 8-d; the model reads \(1, 16\)'):
    prompts.contexts(prior, models.get_model(prior), ['a seven'])
