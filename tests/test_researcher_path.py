"""The researcher's path on one tiny trained run: the Python API and its example, a workdir that
remembers its config, outputs that never overwrite each other, evaluation resumed by metric, no
silent carry-over of sampler settings, progress lines without a terminal."""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import os
import sys
import tomllib
from unittest import mock

import numpy as np
import pytest

import helpers
from configs import default_toy
from configs.vp import digits_ddpmpp_continuous
import score_sde
from score_sde import evaluation, progress, reporting, training
from score_sde.sampling import settings as sampler_settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ml_collections loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')


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


def run_cli(capsys, script, *args):
  """(exit status, stdout, stderr) of ``python <script> <args>``, run in this process."""
  capsys.readouterr()
  code = helpers.run_entry_point(script, *args)
  out, err = capsys.readouterr()
  return code, out, err


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
  toy = default_toy.get_config()                      # ode, with num_steps=500 set for pc
  pc, left_out = sampler_settings.for_method(toy, 'pc')
  assert pc.sampling.num_steps == 500 and left_out == {}


def test_sample_cli_takes_the_stored_config_and_never_overwrites(run_dir, tmp_path, capsys):
  outdir = str(tmp_path / 'out')
  code, out, err = run_cli(capsys, 'sample.py', f'--workdir={run_dir}', f'--outdir={outdir}',
                           '--num_samples=16', '--config.sampling.method=pc',
                           '--config.sampling.num_steps=4')
  assert code == 0, err
  assert 'sample: 8 devices (cpu); model mlp (1,514 parameters)' in out   # the banner
  # The run's config file spelt out, and another method: a second set of files beside the first.
  code, out, err = run_cli(capsys, 'sample.py', f'--config={run_dir}/config.json',
                           f'--workdir={run_dir}', f'--outdir={outdir}', '--num_samples=16',
                           '--config.sampling.method=ddim', '--config.sampling.num_steps=3',
                           '--tag=try')
  assert code == 0, err
  names = sorted(n for n in os.listdir(outdir) if n.endswith('.npz'))
  assert names == ['samples_step20_ddim_nfe3_seed0_try.npz', 'samples_step20_pc_nfe4_seed0.npz']
  # A name already taken (the same command again) gets the next free suffix.
  stem = reporting.output_stem(outdir, 'samples_step20_pc_nfe4_seed0', ('.npz', '.png'))
  assert stem == os.path.join(outdir, 'samples_step20_pc_nfe4_seed0_2')
  code, _, err = run_cli(capsys, 'sample.py', f'--workdir={tmp_path}')
  assert code == 2 and 'has no stored config' in err


def test_evaluation_computes_what_a_newly_enabled_metric_needs(run_dir, capsys):
  config = tiny_config()
  config.eval.enable_loss, config.eval.enable_bpd, config.eval.begin_ckpt = True, False, 0
  evaluation.evaluate(config, run_dir, eval_folder='eval_a')
  capsys.readouterr()
  out = os.path.join(run_dir, 'eval_a')
  [loss_file] = [n for n in os.listdir(os.path.join(out, 'ckpt_20')) if n.startswith('loss_')]
  kept = os.stat(os.path.join(out, 'ckpt_20', loss_file)).st_mtime_ns
  config.eval.enable_bpd, config.eval.bpd_num_examples = True, 64     # a metric added
  reports = evaluation.evaluate(config, run_dir, eval_folder='eval_a')
  assert 'likelihood' in reports[20] and np.isfinite(reports[20]['likelihood']['mean'])
  assert os.stat(os.path.join(out, 'ckpt_20', loss_file)).st_mtime_ns == kept   # not redone
  assert 'for loss, likelihood (0 done before)' in capsys.readouterr().out
  assert evaluation.evaluate(config, run_dir, eval_folder='eval_a')[20] == reports[20]
  assert '(1 done before)' in capsys.readouterr().out


def test_progress_lines_when_not_on_a_terminal(run_dir, capsys):
  with open(os.path.join(run_dir, 'train_output.txt')) as f:
    lines = [line for line in f.read().splitlines() if line.startswith('step ')]
  # log_freq is 1000: every line here is a timed one (SCORE_SDE_PROGRESS_SECONDS=0)
  assert len(lines) >= 10 and all('ETA' in line and 'loss' in line for line in lines)
  with progress.Progress(4, 'rounds', unit='round', interval=0) as bar:
    for _ in range(4):
      bar.update()
  out = capsys.readouterr().out.splitlines()
  assert out[-1].startswith('rounds: 4/4 rounds (100%)') and 'ETA' in out[-1]


def test_console_entry_points_resolve():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  assert project['license'] == 'Apache-2.0'
  assert set(project['scripts']) == {'score-sde-train', 'score-sde-sample',
                                     'score-sde-experiments'}
  for name, target in project['scripts'].items():   # not imported: the programs define flags
    module, function = target.split(':')
    with open(importlib.util.find_spec(module).origin) as f:
      defined = {n.name for n in ast.parse(f.read()).body if isinstance(n, ast.FunctionDef)}
    assert function in defined, name


def test_stored_config_json_round_trips_with_typed_overrides(run_dir):
  from score_sde import stored_config
  config = stored_config.load_json(run_dir)
  with open(os.path.join(run_dir, 'config.json')) as f:
    assert json.load(f)['model']['nf'] == config.model.nf == 16
  argv = stored_config.command_line(['sample.py', f'--workdir={run_dir}'])
  assert argv[1].endswith(f'stored_config.py:{os.path.abspath(run_dir)}/config.json')
  assert stored_config.command_line(['x', '--config=configs/vp/toy_spiral.py']) == [
      'x', '--config=configs/vp/toy_spiral.py']


def test_builtin_masks_and_pictures_one_row_per_example_or_class(tmp_path):
  from PIL import Image

  from score_sde import plotting
  from score_sde.errors import ConfigError
  from score_sde.sampling import masks
  half = masks.builtin_mask('half', 2, 8, 8)
  assert half.shape == (2, 8, 8, 1) and half[:, :, :4].all() and not half[:, :, 4:].any()
  random = masks.builtin_mask('random:0.25', 50, 8, 8, seed=1)
  assert abs(1 - random.mean() - 0.25) < 0.03
  for bad in ('random:2', 'ring', 'box:3'):
    with pytest.raises(ConfigError):
      masks.builtin_mask(bad, 1, 8, 8)
  images = np.random.default_rng(0).random((5, 8, 8, 1))
  rows = Image.open(plotting.completion_rows(images, images, str(tmp_path / 'r.png'), mask=half[:1]))
  grid = Image.open(plotting.class_grid(images, np.array([0, 1, 2, 1, 0]), str(tmp_path / 'c.png')))
  tile = 48 + 2                                           # 8 px enlarged to 48, 2 px padding
  assert rows.size[0] == 3 * tile + 2 and rows.size[1] >= 5 * tile   # masked | filled | original
  assert grid.size == (2 * tile + 2, 3 * tile + 2)        # one row per class, 2 images at most
