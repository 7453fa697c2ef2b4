"""The experiment runner end to end at tiny size: table, plots, resuming after a failure, bad specs."""
from __future__ import annotations

import csv
import os

import pytest

from score_sde import experiments
from score_sde.errors import ConfigError

SPEC = 'configs/experiments/sde_variants_toy.py'


def tiny_spec():
  spec = experiments.load_spec(SPEC)
  base = spec.base
  base.training.n_iters = 2
  base.training.batch_size = 64
  base.training.log_freq = 2
  base.training.eval_freq = 1000
  base.training.snapshot_freq = 2
  base.training.snapshot_freq_for_preemption = 2
  base.model.nf = 8
  base.model.num_layers = 1
  # Two variants that share one compiled sampler (same model, SDE and sampler): the runner's
  # bookkeeping is what is tested here; the SDE axis is exercised by plan() below.
  spec.train_axes = {'data': {'dataset': ['gaussian_mixture', 'spiral']},
                     'training': {'sde': ['vpsde']}}
  spec.samplers = {'pc_em': {'method': 'pc', 'predictor': 'euler_maruyama', 'corrector': 'none'}}
  spec.nfe = [3]
  spec.seeds = [0, 1, 2]
  spec.metrics = ['nll', 'sliced_wasserstein']
  spec.num_samples = 64
  return spec


class Interrupt(Exception):
  pass


def test_runs_resumes_after_a_failure_without_redoing_cells(tmp_path):
  spec, workdir = tiny_spec(), str(tmp_path)
  computed = []

  def fail_after_two(cell, result):
    computed.append(cell.name)
    if len(computed) == 2:
      raise Interrupt

  with pytest.raises(Interrupt):
    experiments.run(spec, workdir, on_cell=fail_after_two)
  cell_dir = tmp_path / 'cells'
  first = {p: os.stat(cell_dir / p).st_mtime_ns for p in os.listdir(cell_dir)
           if p.endswith('.json')}
  assert len(first) == 2
  marker = tmp_path / 'models' / 'dataset-gaussian_mixture+sde-vpsde' / 'experiment_train.json'
  trained_at = os.stat(marker).st_mtime_ns

  resumed = []
  rows = experiments.run(spec, workdir, on_cell=lambda cell, result: resumed.append(cell.name))
  assert len(resumed) == 6 - 2 and not set(resumed) & set(computed)
  assert {p: os.stat(cell_dir / p).st_mtime_ns for p in first} == first
  assert os.stat(marker).st_mtime_ns == trained_at

  # One row per variant (3 seeds each), every metric filled in where it applies: the NLL needs
  # the data density, which only the Gaussian mixture has.
  assert [(r['dataset'], r['sde'], r['sampler'], r['seeds'], r['nfe']) for r in rows] == [
      ('gaussian_mixture', 'vpsde', 'pc_em', 3, 3), ('spiral', 'vpsde', 'pc_em', 3, 3)]
  assert rows[0]['nll'] is not None and rows[0]['nll_se'] > 0 and rows[1]['nll'] is None
  assert all(r['sliced_wasserstein'] > 0 and r['sliced_wasserstein_se'] > 0 for r in rows)
  with open(tmp_path / 'results.csv') as f:
    assert len(list(csv.DictReader(f))) == 2
  table = (tmp_path / 'results.md').read_text()
  assert '| gaussian_mixture | vpsde | pc_em | 3 |' in table and '| spiral | vpsde | pc_em | 3 |' in table
  assert os.path.getsize(tmp_path / 'plots' / 'metric_vs_nfe.png') > 0
  assert os.path.getsize(tmp_path / 'plots' / 'samples.png') > 0

  # A changed spec does not silently reuse (or overwrite) the stored cells.
  spec.num_samples = 128
  with pytest.raises(ConfigError, match='different spec'):
    experiments.run(spec, workdir)


@pytest.mark.parametrize('change, message', [
    (lambda s: s.train_axes.training.update(sdee=['vpsde']), r"'training.sdee'.*valid: \[.*'sde'"),
    (lambda s: s.train_axes.training.update(sde=['vpsde', 'fancy']),
     r"Unknown SDE 'fancy'; valid: \['edm', 'rectified_flow', 'subvpsde', 'vesde'"),
    (lambda s: s.samplers.pc_em.update(method='magic'), r"'magic'; valid: \['ddim', 'dpm_solver'"),
    (lambda s: s.samplers.pc_em.update(predictor='leapfrog'), r"leapfrog"),
    (lambda s: s.samplers.pc_em.update(stepsize=[1, 2]), r"'sampling.stepsize'"),
    (lambda s: s.samplers.pc_em.update(rtol=1e-3),
     r"Sampler 'pc_em': sampling.rtol has no effect with sampling.method='pc'"),
    (lambda s: s.update(metrics=['fid']), r"'fid' is an image metric .* toy metrics: \['mmd', 'nll', 'sliced_wasserstein'\]"),
    (lambda s: s.update(seed_scope='everything'), r"'everything'; valid: \['sampling', 'training'\]"),
])
def test_bad_spec_is_a_config_error_naming_it(change, message):
  spec = tiny_spec()
  change(spec)
  with pytest.raises(ConfigError, match=message):
    experiments.plan(spec)


def test_plan_expands_sampler_setting_axes_and_nfe_budgets():
  spec = tiny_spec()
  spec.train_axes.training.sde = ['vpsde', 'vesde']
  spec.train_axes.data.dataset = ['gaussian_mixture']
  spec.seeds = [0, 1]
  spec.samplers = {'ode': {'method': 'ode', 'rtol': [1e-2, 1e-3]},
                   'heun': {'method': 'heun', 'nfe': [5, 9]}}
  spec.seed_scope = 'training'
  variants, cells = experiments.plan(spec)
  assert len(variants) == 2 * 2            # SDEs x training seeds
  names = {c.sampler for c in cells}
  assert names == {'ode[rtol=0.01]', 'ode[rtol=0.001]', 'heun'}
  assert sorted({dict(c.settings)['num_steps'] for c in cells if c.sampler == 'heun'}) == [3, 5]
  assert all(c.nfe_budget is None for c in cells if c.sampler.startswith('ode'))
  assert len(cells) == len(variants) * 4   # one seed per trained model


def test_samplers_that_do_not_fit_a_model_are_skipped_with_the_reason(tmp_path):
  """A few-step model under a score model's sampler, and a score model under 'few_step': those
  cells are not run (nor is a model trained for nothing) and the table says why."""
  spec = tiny_spec()
  spec.train_axes = {'kind': [
      {'name': 'score', 'training.sde': 'vesde'},
      {'name': 'ct', 'training.sde': 'vesde', 'training.objective': 'ct',
       'sampling.method': 'few_step'}]}
  spec.samplers = {'few': {'method': 'few_step'}, 'ddim': {'method': 'ddim'}}
  spec.nfe, spec.seeds, spec.metrics = [2], [0], ['sliced_wasserstein']
  _, cells = experiments.plan(spec)
  skipped = {(c.variant.name, c.sampler): c.skipped for c in cells if c.skipped}
  assert set(skipped) == {('kind-score', 'few'), ('kind-ct', 'ddim')}
  assert "draws with 'few_step' only, not 'ddim'" in skipped['kind-ct', 'ddim']
  assert 'skipped: 1 cells: a few-step model' in experiments.dry_run(spec)

  # Run with 'few' only: the score model then has nothing to draw and is not trained.
  del spec.samplers['ddim']
  rows = experiments.run(spec, str(tmp_path))
  assert [(r['kind'], r['sampler'], r['nfe'], r['skipped']) for r in rows] == [
      ('score', 'few', None, skipped['kind-score', 'few']), ('ct', 'few', 2, None)]
  assert rows[0]['sliced_wasserstein'] is None and rows[1]['sliced_wasserstein'] > 0
  table = (tmp_path / 'results.md').read_text()
  assert "| score | few | — | — | — | — | skipped: 'few_step' draws models trained for it" in table
  assert sorted(os.listdir(tmp_path / 'models')) == ['kind-ct']
