"""The researcher's path on one tiny trained run: the Python API and its example, a workdir that
remembers its config, outputs that never overwrite each other, evaluation resumed by metric, no
silent carry-over of sampler settings, progress lines without a terminal."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tomllib
from unittest import mock

import numpy as np
import pytest

from configs import default_toy
from configs.vp import digits_ddpmpp_continuous
import score_sde
from score_sde import progress, training
from score_sde.sampling import settings as sampler_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  config = default_toy.get_config()
  config.data.dataset = 'gaussian_mixture'
  config.model.nf = 16
  config.model.num_layers = 1
  t = config.training
  t.batch_size, t.n_iters, t.log_freq, t.eval_freq = 64, 20, 1000, 1000
  t.snapshot_freq, t.snapshot_freq_for_preemption, t.snapshot_sampling = 20, 10, False
  config.sampling.batch_size = 64
  config.eval.batch_size = 64
  config.eval.loss_num_examples = 64
  return config


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A 20-step run; its training output (not on a terminal) is kept for the progress test."""
  workdir = str(tmp_path_factory.mktemp('run'))
  out = io.StringIO()
  with mock.patch.dict(os.environ, {progress.ENV_SECONDS: '0'}), contextlib.redirect_stdout(out):
    training.train_and_evaluate(tiny_config(), workdir)
  with open(os.path.join(workdir, 'train_output.txt'), 'w') as f:
    f.write(out.getvalue())
  return workdir


def _cli(script, *args, **env):
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=os.environ['SCORE_SDE_TEST_XLA_FLAGS'],
             **env)
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def test_load_samples_and_likelihood_from_python(run_dir):
  run = score_sde.load(run_dir)
  assert run.step == 20 and run.config.data.dataset == 'gaussian_mixture'
  out = run.sample(20, method='pc', num_steps=5, seed=1)
  assert out.images.shape == (20, 2) and np.all(np.isfinite(out.images))
  assert out.nfe == 5 and out.method == 'pc' and out.settings['num_steps'] == 5
  again = run.sample(20, method='pc', num_steps=5, seed=1)     # same settings: same draw
  np.testing.assert_array_equal(again.images, out.images)
  score = run.score_fn(out.images[:4], np.full((4,), 0.5, np.float32))
  assert score.shape == (4, 2)
  nll = run.likelihood(out.images[:8])
  assert nll.unit == 'nats' and nll.values.shape == (8,) and np.isfinite(nll.mean)


def test_the_example_script_runs_on_a_tiny_run(run_dir, capsys):
  sys.path.insert(0, os.path.join(ROOT, 'examples'))
  try:
    import notebook_api
  finally:
    sys.path.pop(0)
  rows = notebook_api.main(['--workdir', run_dir, '--num_samples', '16', '--fast_steps', '3'])
  assert [r['NFE'] for r in rows] == [3, 19]
  assert all('nll' in r and 'sliced_wasserstein' in r for r in rows)
  assert '| sampler | NFE |' in capsys.readouterr().out


def test_another_method_does_not_inherit_the_configs_method_settings():
  config = digits_ddpmpp_continuous.get_config()      # dpm_solver, num_steps=25, order=2
  same, left_out = sampler_settings.for_method(config, 'dpm_solver')
  assert (same.sampling.num_steps, same.sampling.order, left_out) == (25, 2, {})
  pc, left_out = sampler_settings.for_method(config, 'pc')
  assert pc.sampling.num_steps is None and left_out == {'num_steps': 25}
  chosen, left_out = sampler_settings.for_method(config, 'pc', {'num_steps': 40})
  assert chosen.sampling.num_steps == 40 and left_out == {}
  note = sampler_settings.describe_left_out({'num_steps': 25}, 'dpm_solver', 'pc')
  assert 'num_steps=25' in note and 'num_steps=None' in note


def test_sample_cli_takes_the_stored_config_and_never_overwrites(run_dir, tmp_path):
  outdir = str(tmp_path / 'out')
  first = _cli('sample.py', f'--workdir={run_dir}', f'--outdir={outdir}', '--num_samples=64',
               '--config.sampling.method=pc', '--config.sampling.num_steps=4')
  assert first.returncode == 0, first.stderr[-2000:]
  # The run's config file spelt out, and another method: a second set of files beside the first.
  second = _cli('sample.py', f'--config={run_dir}/config.json', f'--workdir={run_dir}',
                f'--outdir={outdir}', '--num_samples=64', '--config.sampling.method=ddim',
                '--config.sampling.num_steps=3')
  assert second.returncode == 0, second.stderr[-2000:]
  names = sorted(n for n in os.listdir(outdir) if n.endswith('.npz'))
  assert names == ['samples_step20_ddim_nfe3_seed0.npz', 'samples_step20_pc_nfe4_seed0.npz']
  # The same command again writes new files rather than replacing the first ones.
  third = _cli('sample.py', f'--workdir={run_dir}', f'--outdir={outdir}', '--num_samples=64',
               '--config.sampling.method=pc', '--config.sampling.num_steps=4')
  assert third.returncode == 0, third.stderr[-2000:]
  assert 'samples_step20_pc_nfe4_seed0_2.npz' in os.listdir(outdir)


def test_progress_lines_when_not_on_a_terminal(run_dir, capsys):
  with open(os.path.join(run_dir, 'train_output.txt')) as f:
    lines = [line for line in f.read().splitlines() if line.startswith('train')]
  assert len(lines) >= 2 and all('ETA' in line and 'loss' in line for line in lines)
  with progress.Progress(4, 'rounds', unit='round', interval=0) as bar:
    for _ in range(4):
      bar.update()
  out = capsys.readouterr().out.splitlines()
  assert out[-1].startswith('rounds: 4/4 rounds (100%)') and 'ETA' in out[-1]


def test_console_entry_points_resolve():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  assert project['license'] == 'Apache-2.0'
  import importlib
  for name, target in project['scripts'].items():
    module, function = target.split(':')
    assert callable(getattr(importlib.import_module(module), function)), name


def test_stored_config_json_round_trips_with_typed_overrides(run_dir):
  from score_sde import stored_config
  config = stored_config.load_json(run_dir)
  with open(os.path.join(run_dir, 'config.json')) as f:
    assert json.load(f)['model']['nf'] == config.model.nf == 16
  argv = stored_config.command_line(['sample.py', f'--workdir={run_dir}'])
  assert argv[1].endswith(f'stored_config.py:{os.path.abspath(run_dir)}/config.json')
  assert stored_config.command_line(['x', '--config=configs/vp/toy_spiral.py']) == [
      'x', '--config=configs/vp/toy_spiral.py']
