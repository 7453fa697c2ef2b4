"""Class conditioning and guidance against the exact class-conditional scores of a labelled
Gaussian mixture (component k has class k mod C), plus the model, data and error plumbing."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default_toy
import helpers
from score_sde import generation, losses, models, sampling, sde_lib, train_state
from score_sde.sampling import guidance
from score_sde.datasets import get_dataset, toy
from score_sde.errors import ConfigError, DataError, MissingFileError
from score_sde.models import utils as mutils
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()                 # 8 modes, std 0.08: classes well apart
WIDE = toy.gaussian_mixture(std=0.25)        # the same modes overlapping
VE = sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0, N=1000)
C = 2


def _labelled(gmm):
  return lambda x, t, y: gmm.class_score(x, t, y, C, VE)


def _sampler(n, num_steps=20):
  config = default_toy.get_config()
  config.sampling.method, config.sampling.order = 'dpm_solver', 3
  config.sampling.num_steps = num_steps
  return sampling.get_sampler(config, VE, (n, 2))


@pytest.fixture(scope='module')
def draw():
  """draw(gmm, label, scale) -> (n, 2) samples of classifier-free guidance on the exact scores
  (one compiled sampler; the scale is traced, so scale 0 also runs the batched [y; null] pass)."""
  n = 4000
  sampler = _sampler(n)

  @jax.jit
  def run(scale, label, wide):
    labels = jnp.full((n,), label)
    score = lambda g: guidance.classifier_free_score_fn(_labelled(g), VE, labels, C, scale)
    return jax.lax.cond(wide, lambda: sampler(jax.random.PRNGKey(1), score(WIDE))[0],
                        lambda: sampler(jax.random.PRNGKey(1), score(GMM))[0])
  return lambda gmm, label, scale: np.asarray(run(jnp.float32(scale), label, gmm is WIDE))


def _share_in_class(x, gmm, label):
  """Share of samples whose nearest mode belongs to class ``label``."""
  k = np.argmin(((x[:, None] - np.asarray(gmm.means)[None]) ** 2).sum(-1), axis=1)
  return float(np.mean(k % C == label))


@pytest.mark.parametrize('label', [0, 1])
def test_scale_zero_reproduces_the_class_conditional(draw, label):
  """w = 0 samples p(x | y): the class's sub-mixture within the exact-sample noise floor (for
  4000 exact samples z is about 2-3)."""
  fit = mixture_fit(draw(GMM, label, 0.0), GMM.class_mixture(label, C))
  assert fit['z'] < 4.5, fit


def test_larger_scales_concentrate_mass_on_the_class(draw):
  """Overlapping classes: w = 0 matches the exact share of p(x | y) in its class's modes, and
  the share grows with w."""
  exact_x = np.asarray(WIDE.class_mixture(0, C).sample(jax.random.PRNGKey(7), 20000))
  exact = _share_in_class(exact_x, WIDE, 0)
  shares = [_share_in_class(draw(WIDE, 0, w), WIDE, 0) for w in (0.0, 1.0, 4.0)]
  assert abs(shares[0] - exact) < 4 * math.sqrt(exact * (1 - exact) / 4000) + 0.01, (shares, exact)
  assert shares[0] < shares[1] < shares[2], shares
  assert shares[2] > 0.97 > exact + 0.05, (shares, exact)


def test_classifier_free_equals_classifier_guidance_with_the_exact_classifier():
  """(1 + w) s_y - w s = s + (1 + w) grad log p_t(y | x) for exact scores and classifier."""
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 2))
  t = jax.random.uniform(jax.random.PRNGKey(1), (64,), minval=0.01, maxval=1.0)
  labels = jnp.arange(64) % C
  w = 2.5
  cfg = guidance.classifier_free_score_fn(_labelled(WIDE), VE, labels, C, w)
  logits = lambda x, t: WIDE.class_logits(x, t, C, VE)
  clf = guidance.classifier_guided_score_fn(WIDE.score_fn(VE), logits, labels, 1 + w)
  both = jax.jit(lambda x, t: (cfg(x, t), clf(x, t)))(x, t)
  np.testing.assert_allclose(*both, rtol=1e-4, atol=1e-4)


def test_guidance_interval_switches_guidance_by_noise_level():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 2))
  labels = jnp.zeros((8,), jnp.int32)
  labelled = _labelled(WIDE)
  fn = guidance.classifier_free_score_fn(labelled, VE, labels, C, 3.0, sigma_min=0.1,
                                         sigma_max=1.0)
  scores = jax.jit(lambda x, t: (labelled(x, t, labels), WIDE.score(x, t, VE), fn(x, t)))
  for t_value, inside in [(0.02, False), (0.5, True), (0.99, False)]:
    t = jnp.full((8,), t_value)
    sigma = 0.01 * 300**t_value   # VE: sigma(t) = sigma_min (sigma_max / sigma_min)^t
    assert (0.1 <= sigma <= 1.0) == inside
    cond, uncond, got = scores(x, t)
    expected = cond + 3.0 * (cond - uncond) if inside else cond
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# --- models, training data, labels --------------------------------------------------------------

def _conditional_config(num_classes=C, dataset='gaussian_mixture'):
  config = default_toy.get_config()
  config.data.dataset = dataset
  config.data.num_classes = num_classes
  config.model.class_conditional = True
  config.model.nf, config.model.num_layers = 16, 1
  config.classifier.nf, config.classifier.num_layers = 16, 1
  return config


def test_class_embedding_adds_one_table_null_label_is_the_default_and_all_rows_train():
  plain, cond = default_toy.get_config(), _conditional_config()
  plain.model.nf, plain.model.num_layers = 16, 1
  p_plain = jax.eval_shape(lambda: mutils.init_params(jax.random.PRNGKey(0),
                                                      models.get_model(plain), (2,)))
  model = models.get_model(cond)
  x, t = jnp.ones((3, 2)), jnp.full((3,), 0.5)
  data, y = toy.get_labelled_toy_sampler('gaussian_mixture', C)(jax.random.PRNGKey(1), 64)
  loss_fn = losses.get_loss_fn(sde_lib.VPSDE(), model, train=True, label_dropout=0.5)

  @jax.jit
  def init_score_grad():
    p = mutils.init_params(jax.random.PRNGKey(0), model, (2,))
    # Give all weights (the zero-initialised output layer too) values so labels matter.
    p_rand = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(2), a.shape),
                          p)
    grads = jax.grad(lambda q: loss_fn(q, data, jax.random.PRNGKey(2), 0, y)[0])(p_rand)
    return p, grads, (
        mutils.get_score_fn(VE, model, p_rand)(x, t),
        mutils.get_score_fn(VE, model, p_rand, class_labels=jnp.full((3,), C))(x, t),
        mutils.get_score_fn(VE, model, p_rand, class_labels=jnp.zeros((3,), jnp.int32))(x, t))
  p_cond, grads, (none, null, other) = init_score_grad()
  # The loss reads the labels and drops half of them: both classes and the null row train.
  assert np.all(np.abs(np.asarray(grads['class_embedding']['embedding'])).sum(-1) > 0)
  assert set(p_cond) - set(p_plain) == {'class_embedding'}
  assert p_cond['class_embedding']['embedding'].shape == (C + 1, 16)
  assert jax.tree.map(jnp.shape, {k: v for k, v in p_cond.items() if k != 'class_embedding'}) \
      == jax.tree.map(jnp.shape, p_plain)
  np.testing.assert_array_equal(none, null)
  assert not np.allclose(none, other)


@pytest.mark.parametrize('name, precond', [('tiny.ncsnpp', 'paper'), ('tiny.ddpm', 'edm')])
def test_image_models_take_class_labels(name, precond):
  import importlib
  config = importlib.import_module('configs.' + name).get_config()
  config.model.class_conditional, config.data.num_classes = True, 10
  config.model.precond = precond
  model = models.get_model(config)
  s = config.data.image_size
  x = jax.ShapeDtypeStruct((2, s, s, config.data.num_channels), jnp.float32)

  def score(x):
    params = mutils.init_params(jax.random.PRNGKey(0), model, x.shape[1:])
    assert params.get('net', params)['class_embedding']['embedding'].shape[0] == 11
    return mutils.get_score_fn(sde_lib.VPSDE(), model, params,
                               class_labels=jnp.array([3, 10]))(x, jnp.full((2,), 0.5))
  assert jax.eval_shape(score, x).shape == x.shape


def test_label_dropout_rate_and_labelled_toy_batches():
  labels = jnp.zeros((20000,), jnp.int32)
  dropped = jax.jit(losses.drop_labels, static_argnums=(2, 3))(jax.random.PRNGKey(0), labels, C,
                                                               0.1)
  assert set(np.unique(dropped)) == {0, C}
  assert abs(float(np.mean(dropped == C)) - 0.1) < 0.01
  for dataset in ('gaussian_mixture', 'spiral'):
    config = _conditional_config(dataset=dataset)
    batch = next(get_dataset(config, 'train', num_local_devices=2, batch_size=512))
    assert batch['label'].shape == (2, 256) and set(np.unique(batch['label'])) == {0, 1}
    x, y = batch['image'].reshape(-1, 2), batch['label'].reshape(-1)
    if dataset == 'gaussian_mixture':   # the label is the nearest mode's class
      k = np.argmin(((x[:, None] - np.asarray(GMM.means)[None]) ** 2).sum(-1), axis=1)
      assert np.mean(k % C == y) > 0.999
    else:   # arm 0 is +u (cos theta, sin theta), arm 1 its mirror image, theta = 3.5 pi u
      u = np.linalg.norm(x, axis=1) / toy.SHAPE_SCALE
      theta = 3.5 * np.pi * u
      side = np.sign(x[:, 0] * np.cos(theta) + x[:, 1] * np.sin(theta))
      outer = u > 0.3
      assert np.mean(side[outer] == np.where(y[outer] == 0, 1, -1)) > 0.97


def test_bad_input_gives_clear_errors():
  with pytest.raises(DataError, match='label 2 is out of range; valid: 0..1'):
    guidance.check_labels([0, 2], C)
  with pytest.raises(ConfigError, match='class-conditional model'):
    guidance.check_guidable(models.get_model(default_toy.get_config()))
  config = _conditional_config()
  config.data.num_classes = None
  with pytest.raises(ConfigError, match='data.num_classes'):
    models.get_model(config)
  with pytest.raises(ConfigError, match='has no labels'):
    get_dataset(_conditional_config(dataset='checkerboard'), 'train', num_local_devices=1)
  with pytest.raises(ConfigError, match='valid: \\[2\\]'):
    get_dataset(_conditional_config(3, 'spiral'), 'train', num_local_devices=1)


# --- classifiers and sample.py's conditional plumbing ------------------------------------------

def test_classifier_models_and_training_step():
  from score_sde import classifier_training
  from score_sde.models import classifier as classifiers
  config = _conditional_config()
  clf = classifiers.get_classifier(config)
  optimizer = train_state.get_classifier_optimizer(config.classifier)
  step = classifier_training.get_classifier_step_fn(VE, clf, optimizer)
  x, y = toy.get_labelled_toy_sampler('gaussian_mixture', C)(jax.random.PRNGKey(1), 256)

  @jax.jit
  def train():
    state = train_state.init_classifier_state(config, clf, optimizer, jax.random.PRNGKey(0))
    def body(state, i):
      state, metrics = step(state, {'image': x, 'label': y}, jax.random.PRNGKey(0))
      return state, metrics['loss']
    state, seen = jax.lax.scan(body, state, jnp.arange(20))
    return seen, classifiers.get_logit_fn(VE, clf, state.params)(x, jnp.full((256,), 0.01))
  losses_seen, logits = train()
  assert np.mean(losses_seen[-5:]) < np.mean(losses_seen[:5])
  assert logits.shape == (256, C)
  # The paper's Wide-ResNet, small: logits for images, no parameter materialised.
  config.classifier.name, config.classifier.blocks_per_group = 'wideresnet', 1
  config.classifier.channel_multiplier = 1
  wrn = classifiers.get_classifier(config)
  out = jax.eval_shape(lambda x: wrn.init_with_output(jax.random.PRNGKey(0), x, jnp.ones(2))[0],
                       jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
  assert out.shape == (2, C)
  config.classifier.name = 'resnet'
  with pytest.raises(ConfigError, match="valid: \\['mlp', 'wideresnet'\\]"):
    classifiers.get_classifier(config)


class _Flags:
  labels = None
  prompt = None
  classifier_workdir = None
  inpaint_image = None
  inpaint_mask = None
  colorize_image = None
  seed = 0


def test_sample_cli_conditional_modes_run_on_all_devices(tmp_path):
  """Labels split over 8 devices reach the guided score through sample.py's path (its flag
  parsing, then generation's one draw loop); bad labels, files and masks fail early
  (inpainting itself: test_controllable_generation)."""
  sample = helpers.entry_point('sample.py')
  config = _conditional_config()
  config.sampling.method, config.sampling.num_steps, config.sampling.batch_size = 'pc', 5, 16
  config.sampling.guidance_scale = 2.0
  model = models.get_model(config)
  params = jax.jit(lambda: mutils.init_params(jax.random.PRNGKey(0), model, (2,)))()
  sde = sde_lib.VPSDE()
  flags = _Flags()
  flags.labels = '1,0,1'
  inputs = sample.conditional_inputs(config, flags, C)
  generation.check_inputs(config, model, inputs)
  sample_fn = generation.get_sample_fn(config, sde, model, input_keys=tuple(inputs))
  samples, used, nfe = generation.draw(sample_fn, params, jax.random.PRNGKey(0), 20, inputs)
  assert samples.shape == (20, 2) and nfe == 5 and np.all(np.isfinite(samples))
  np.testing.assert_array_equal(used['labels'], np.arange(20) % 3 != 1)
  np.save(tmp_path / 'x.npy', np.array([0.7, 0.0], np.float32))
  flags.inpaint_image, flags.inpaint_mask = str(tmp_path / 'x.npy'), str(tmp_path / 'm.npy')
  flags.labels = None
  with pytest.raises(MissingFileError, match='m.npy'):
    sample.conditional_inputs(config, flags, C)
  flags.labels = '2'
  with pytest.raises(DataError, match='out of range'):
    sample.conditional_inputs(config, flags, C)
  np.save(tmp_path / 'm.npy', np.ones((3,), np.float32))
  flags.labels = None
  with pytest.raises(DataError, match='inpaint_mask has shape'):
    generation.check_inputs(config, model, sample.conditional_inputs(config, flags, C))


def test_guidance_settings_the_flags_would_not_use_are_errors():
  config = _conditional_config()
  check = helpers.entry_point('sample.py').check_guidance_settings
  flags = _Flags()
  check(config, flags)                       # defaults: nothing to complain about
  config.sampling.guidance_scale = 2.0
  with pytest.raises(ConfigError, match=r'guidance_scale=2.0 guides .* without --labels'):
    check(config, flags)
  flags.labels = '0,1'
  check(config, flags)                       # classifier-free guidance: used
  flags.classifier_workdir = '/somewhere'
  with pytest.raises(ConfigError, match='no effect with --classifier_workdir'):
    check(config, flags)
  config.sampling.guidance_scale = 0.0
  config.sampling.classifier_scale = 3.0
  check(config, flags)                       # classifier guidance: used
  flags.classifier_workdir = None
  with pytest.raises(ConfigError, match='classifier_scale=3.0 scales classifier guidance and '
                                        'needs --classifier_workdir'):
    check(config, flags)
  config.sampling.classifier_scale = 1.0
  config.sampling.guidance_sigma_max = 5.0
  flags.labels = None
  with pytest.raises(ConfigError, match='guidance_sigma_max=5.0 guides'):
    check(config, flags)
