"""train.py and sample.py end to end, as a user runs them (tiny settings, one process each)."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config.training.n_iters=30', '--config.training.batch_size=64',
        '--config.training.log_freq=10', '--config.training.snapshot_freq=30',
        '--config.training.snapshot_freq_for_preemption=10', '--config.model.nf=32',
        '--config.sampling.batch_size=128']


def _run(script, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ['SCORE_SDE_TEST_XLA_FLAGS'])
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_train_then_sample_writes_pictures(tmp_path):
  config = '--config=configs/vp/toy_spiral.py'
  workdir = f'--workdir={tmp_path}'
  train = _run('train.py', config, workdir, *TINY)
  assert train.returncode == 0, train.stderr[-3000:]
  assert 'step 30/30' in train.stdout and 'steps/s' in train.stdout and 'ETA' in train.stdout
  assert os.path.exists(tmp_path / 'samples' / 'step_30.png')     # snapshot sampling

  # Few steps on a grid optimised for this checkpoint (sample.py --optimise_grid).
  sample = _run('sample.py', config, workdir, *TINY, '--num_samples=200', '--optimise_grid',
                '--config.sampling.method=unipc', '--config.sampling.num_steps=4')
  assert sample.returncode == 0, sample.stderr[-3000:]
  assert '(4 NFE per sample batch)' in sample.stdout
  assert os.path.exists(tmp_path / 'grids' / 'unipc_4steps_step30.json')
  [npz] = (tmp_path / 'samples').glob('samples_step30_unipc_nfe4_seed0.npz')   # what made them
  samples = np.load(npz)['samples']
  assert samples.shape == (200, 2) and np.all(np.isfinite(samples))
  for name in (npz.stem, npz.stem.replace('samples_', 'score_field_', 1)):
    assert Image.open(tmp_path / 'samples' / f'{name}.png').size[0] > 300


def test_sample_without_checkpoint_fails_clearly(tmp_path):
  result = _run('sample.py', '--config=configs/vp/toy_spiral.py', f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'No complete checkpoint in' in result.stderr


def test_config_typo_on_the_command_line_fails_clearly(tmp_path):
  result = _run('train.py', '--config=configs/vp/toy_spiral.py', f'--workdir={tmp_path}',
                '--config.training.n_iter=5')
  assert result.returncode != 0
  assert 'n_iters' in result.stderr


def test_optional_fields_can_be_set_on_the_command_line(tmp_path):
  """None-valued fields are typed placeholders: overriding them parses, and the run gets as far
  as the next (deliberate) error, the unknown dataset."""
  result = _run('train.py', '--config=configs/vp/toy_spiral.py', f'--workdir={tmp_path}',
                '--config.eval.end_ckpt=3', '--config.sampling.time_schedule=uniform',
                '--config.data.path=/nowhere', '--config.data.dataset=nope')
  assert result.returncode != 0
  assert "Unknown dataset 'nope'" in result.stderr


def test_sample_from_a_paper_format_checkpoint(tmp_path):
  import jax
  from configs import default_toy
  from score_sde import models
  from score_sde.models import utils as mutils
  from test_paper_checkpoint import _write_paper_state
  config = default_toy.get_config()
  config.model.nf = 32
  params = mutils.init_params(jax.random.PRNGKey(0), models.get_model(config), (2,))
  _write_paper_state(tmp_path / 'checkpoint_5', params, params, step=5)
  result = _run('sample.py', '--config=configs/vp/toy_spiral.py', f'--workdir={tmp_path}',
                f'--paper_checkpoint={tmp_path}', '--config.model.nf=32',
                '--config.model.precond=paper', '--config.sampling.batch_size=64')
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(list((tmp_path / 'samples').glob('samples_step5_*.npz'))) == 1
