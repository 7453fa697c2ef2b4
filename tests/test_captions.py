"""Per-example contexts: the digits' made captions, word contexts, .npz embeddings and a folder's
captions file, batched and sharded like labels; their one-line errors."""
import numpy as np
import pytest
from PIL import Image

from configs.text import digits as digits_text
from score_sde import config_checks, datasets, models
from score_sde.datasets import captions
from score_sde.errors import ConfigError, DataError
from score_sde.models import prompts
from tests.helpers import tiny_context_config


def test_ink_and_slant_of_a_leaning_stroke():
  upright = np.zeros((1, 8, 8))
  upright[0, :, 3] = 1.0
  leaning = np.zeros((1, 8, 8))
  leaning[0, np.arange(8), 7 - np.arange(8)] = 1.0   # top right to bottom left: leans right
  ink, slant = captions.ink_and_slant(np.concatenate([upright, 2 * leaning]))
  np.testing.assert_allclose(ink, [8.0, 16.0])
  np.testing.assert_allclose(slant, [0.0, 1.0], atol=1e-12)


def test_digits_captions_rank_each_attribute_within_its_class():
  made = captions.digits_captions()
  assert len(made) == 1797
  assert captions.describe(7, 2, 2) == 'a thick, slanted seven'
  assert captions.describe(1, 1, 0) == 'a one'
  from score_sde.datasets import digits
  labels = digits.load_all()[1]
  for label in (1, 8):
    mine = [c for c, y in zip(made, labels) if y == label]
    assert all(c.endswith(captions.DIGIT_WORDS[label]) for c in mine)
    for word in ('thin', 'thick', 'slanted'):
      share = np.mean([word in captions.words(c) for c in mine])
      assert abs(share - 1 / 3) < 0.02, (label, word, share)


def test_word_contexts_are_one_hot_rows_and_the_empty_caption_is_zero():
  vocab = ('a', 'thick', 'seven')
  out = captions.word_contexts(['A thick, SEVEN', ''], vocab, 4)
  np.testing.assert_array_equal(out[0], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(out[1], 0)
  with pytest.raises(DataError, match=r"'purple' is not in the vocabulary \(a, thick, seven\)"):
    captions.word_contexts(['a purple seven'], vocab, 4)
  with pytest.raises(DataError, match='has 5 words; the model reads 4'):
    captions.word_contexts(['a a a a a'], vocab, 4)


def _batch(config, split='train'):
  return next(datasets.get_dataset(config, split, num_local_devices=2, batch_size=8))


def test_digits_batches_carry_caption_contexts_sharded_like_labels():
  config = digits_text.get_config()
  config_checks.check(config, 'train', 1)
  batch = _batch(config)
  assert batch['context'].shape == (2, 4, 4, 14) and batch['label'].shape == (2, 4)
  words = np.asarray(captions.DIGITS_VOCABULARY)
  for context, label in zip(batch['context'].reshape(8, 4, 14), batch['label'].reshape(8)):
    said = [words[i] for i in context.argmax(-1)[context.sum(-1) > 0]]
    assert said[0] == 'a' and said[-1] == captions.DIGIT_WORDS[label]


def test_npz_embeddings_follow_the_split_order(tmp_path):
  from score_sde.datasets import digits
  labels = digits.load_all()[1]
  path = str(tmp_path / 'emb.npz')
  np.savez(path, **{split: np.broadcast_to(labels[digits.split_indices()[split]][:, None, None],
                                           (len(digits.split_indices()[split]), 2, 3)
                                           ).astype(np.float32) for split in ('train', 'test')})
  config = digits_text.get_config()
  config.data.context, config.model.context_length, config.model.context_dim = path, 2, 3
  for split in ('train', 'test'):
    batch = _batch(config, split)
    np.testing.assert_array_equal(batch['context'][..., 0, 0], batch['label'])
  config.model.context_dim = 5
  with pytest.raises(ConfigError, match=r'gives \(2, 3\) contexts per example; set '
                                        r'model.context_length=2, model.context_dim=3'):
    _batch(config)


def test_folder_captions_file(tmp_path):
  names = ['b.png', 'a.png', 'c.png', 'd.png']
  for i, name in enumerate(names):
    Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(tmp_path / name)
  (tmp_path / 'captions.txt').write_text(
      ''.join(f'{n}\t{"dark" if i < 2 else "light"} square\n' for i, n in enumerate(names)))
  config = tiny_context_config()
  config.data.update(dataset='folder', path=str(tmp_path), image_size=8, context='captions')
  config.model.context_length, config.model.context_dim = 2, 3
  batch = _batch(config)
  # vocabulary (dark, light, square); an image's brightness tells its caption.
  dark = batch['image'].reshape(8, -1).mean(-1) < -0.5
  np.testing.assert_array_equal(batch['context'].reshape(8, 2, 3)[:, 0, 0], dark)
  (tmp_path / 'captions.txt').write_text('b.png\tdark square\n')
  with pytest.raises(DataError, match="3 images have no line in captions.txt, e.g. 'a.png'"):
    _batch(config)


def test_context_settings_that_cannot_work_are_one_line():
  config = digits_text.get_config()
  config.model.name = 'ddpm'
  with pytest.raises(ConfigError, match="data.context='captions' has no effect: model 'ddpm'"):
    config_checks.check(config, 'train', 1)
  config = digits_text.get_config()
  config.data.dataset = 'cifar10'
  with pytest.raises(ConfigError, match="'captions' is available for"):
    config_checks.check(config, 'train', 1)
  config = digits_text.get_config()
  config.data.context = None
  with pytest.raises(ConfigError, match=r"cross-attends to per-example contexts: set data.context"):
    config_checks.check(config, 'train', 1)
  config_checks.check(config, 'sample', 1)     # sampling with --prompt needs no data contexts


def test_prompts_of_a_caption_model_are_word_contexts():
  config = digits_text.get_config()
  model = models.get_model(config)
  found = prompts.contexts(config, model, ['a thick seven'])
  np.testing.assert_array_equal(found['context'],
                                captions.word_contexts(['a thick seven'],
                                                       captions.DIGITS_VOCABULARY, 4))
  np.testing.assert_array_equal(found['null_context'], 0)
  with pytest.raises(DataError, match="Prompt 'a blue seven': 'blue' is not in the vocabulary"):
    prompts.contexts(config, model, ['a blue seven'])
