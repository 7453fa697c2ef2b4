"""A tiny image model trains end to end through ``train_and_evaluate`` on real pipelines:
mock CIFAR-10 through tfds.data_source + grain, and a folder of PNGs written by the test (which
is also stopped and resumed, its grain position restored from the checkpoint)."""
import pytest
import tensorflow_datasets as tfds

from configs.tiny import ddpm as tiny_ddpm
from score_sde import checkpointing, training
from test_datasets_folder import make_image_folder


def _tiny_config(n_iters):
  config = tiny_ddpm.get_config()
  config.training.n_iters = n_iters
  config.training.log_freq = 1
  config.training.eval_freq = 1000    # the eval step's compile is covered by test_training
  config.training.snapshot_freq = 2
  config.training.snapshot_freq_for_preemption = 2
  config.training.snapshot_sampling = False
  return config


@pytest.mark.parametrize('source', ['mock_cifar10', 'folder'])
def test_tiny_ddpm_trains_and_resumes_on_images(tmp_path, source):
  config = _tiny_config(n_iters=2)
  if source == 'folder':
    make_image_folder(tmp_path / 'images', num_per_class=8, size=(12, 10))
    config.data.dataset = 'folder'
    config.data.path = str(tmp_path / 'images')
    state = training.train_and_evaluate(config, str(tmp_path / 'run'))
    config.training.n_iters = 3
    state = training.train_and_evaluate(config, str(tmp_path / 'run'))
  else:
    config.training.n_iters = 3
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
      state = training.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 3
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path / 'run')),
                                    read_only=True)
  assert ckpt.latest_step() == 3
