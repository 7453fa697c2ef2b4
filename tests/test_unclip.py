"""unCLIP on the digits: the contrastive pair (symmetric InfoNCE against closed form, its
training job, export and held-out metrics), the decoder's embedding conditioning, the diffusion
prior over embeddings, and their one-line errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.unclip import digits as unclip_digits
from score_sde import contrastive_training
from score_sde.checkpointing import contrastive as ckpt_contrastive
from score_sde.evaluation import zero_shot
from score_sde.models import contrastive


def test_clip_loss_closed_forms_and_symmetry():
  b, d = 4, 6
  eye = jnp.eye(b, d)
  # s = 0: every pair is equally likely, log B on both sides.
  np.testing.assert_allclose(contrastive.clip_loss(eye, eye, 0.0), math.log(b), rtol=1e-6)
  # Orthonormal matched pairs: logits s I, loss log(1 + (B - 1) e^-s).
  for s in (1.0, 5.0):
    np.testing.assert_allclose(contrastive.clip_loss(eye, eye, s),
                               math.log(1 + (b - 1) * math.exp(-s)), rtol=1e-5)
  v = contrastive.normalize(jax.random.normal(jax.random.PRNGKey(0), (b, d)))
  u = contrastive.normalize(jax.random.normal(jax.random.PRNGKey(1), (b, d)))
  # Swapping the two sides transposes the logits: the same loss, the gradients trade places.
  np.testing.assert_allclose(contrastive.clip_loss(v, u, 3.0), contrastive.clip_loss(u, v, 3.0),
                             rtol=1e-6)
  gv, gu = jax.grad(contrastive.clip_loss, argnums=(0, 1))(v, u, 3.0)
  gu_swapped, gv_swapped = jax.grad(contrastive.clip_loss, argnums=(0, 1))(u, v, 3.0)
  np.testing.assert_allclose(gv, gv_swapped, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(gu, gu_swapped, rtol=1e-5, atol=1e-7)
  # By hand, B = 2, s = 2: logits [[2, 0], [0, 2]], each row's true pair has e^2 / (e^2 + 1).
  two = jnp.eye(2)
  np.testing.assert_allclose(contrastive.clip_loss(two, two, 2.0),
                             -math.log(math.exp(2) / (math.exp(2) + 1)), rtol=1e-5)


def test_zero_shot_and_retrieval_on_hand_made_embeddings():
  prompts = np.eye(3)
  images = np.array([[1, 0.1, 0], [0, 1, 0], [0.2, 0, 1], [1, 0, 0]])
  assert zero_shot.zero_shot_accuracy(images, np.array([0, 1, 2, 2]), prompts) == 0.75
  found = zero_shot.retrieval_accuracy(images, prompts[[0, 1, 2, 0]], ['a', 'b', 'c', 'a'])
  assert found == {'image_to_caption': 1.0, 'caption_to_image': 1.0, 'distinct_captions': 3.0}
  found = zero_shot.retrieval_accuracy(images, prompts[[1, 0, 2, 1]], ['b', 'a', 'c', 'b'])
  assert found['image_to_caption'] == 0.25 and found['caption_to_image'] == 1 / 3


def tiny_unclip_config():
  """configs/unclip/digits.py with a tiny contrastive pair (8-d) trained 3 steps of batch 16."""
  config = unclip_digits.get_config()
  c = config.contrastive
  c.embed_dim, c.text_width, c.text_heads, c.image_channels, c.image_hidden = 8, 16, 2, (4,), 16
  c.n_iters, c.batch_size, c.log_freq = 3, 16, 3
  config.eval.batch_size = 16
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
  test_images, labels, found = contrastive_training.split_examples(
      contrastive_training.captions_config(config), 'test')
  np.testing.assert_allclose(trained.encode_images(test_images), images['test'][:, 0],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(trained.encode_text(found[:5]), texts['test'][:5, 0],
                             rtol=1e-5, atol=1e-6)
  metrics = contrastive_training.evaluate(config, trained)
  assert 0 <= metrics['zero_shot_ensemble_accuracy'] <= 1 and metrics['distinct_captions'] > 10

