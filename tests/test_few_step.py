"""Few-step models as training objectives and the ``few_step`` sampler: consistency training and
distillation and MeanFlow trained by ``training.train_and_evaluate`` on the 8-mode mixture and
drawn in 1 and 2 steps; one step on 8 devices equals the step on one; bad input is one line.
(The objectives' math against closed form and finite differences: test_consistency.py.)"""
import os

import jax
import numpy as np
import pytest

import helpers
import score_sde
from configs.rf import toy_gaussian_mixture as rf_mixture
from configs.ve import toy_gaussian_mixture as ve_mixture
from score_sde import checkpointing, config_checks, generation, losses, models, parallel
from score_sde import sde_lib, teacher, train_state, training
from score_sde.checkpointing import identity
from score_sde.datasets import toy
from score_sde.errors import ConfigError, MissingFileError
from score_sde.sampling import grid_files, schedules

# Two steps, each run's only snapshot at its end: samples drawn by few_step in 2 steps.
SHORT = {'training.n_iters': 2, 'training.log_freq': 2, 'training.eval_freq': 1000,
         'training.snapshot_freq': 2, 'training.snapshot_freq_for_preemption': 2,
         'training.snapshot_sampling': True, 'sampling.batch_size': 64, 'sampling.num_steps': 2}


def _config(module=ve_mixture, objective=None, **overrides):
  config = module.get_config()
  for path, value in {**helpers.TINY, **SHORT}.items():
    helpers.set_path(config, path, value)
  if objective is not None:
    config.training.objective, config.sampling.method = objective, 'few_step'
  if objective == 'meanflow':
    config.model.two_times, config.model.parameterization = True, None
  for path, value in overrides.items():
    helpers.set_path(config, path, value)
  return config


def _save_untrained(config, workdir):
  """A checkpoint of ``config``'s initial state (a teacher to distil from, untrained)."""
  model = models.get_model(config)
  state = train_state.init_train_state(config, model, train_state.get_optimizer(config.optim),
                                       jax.random.PRNGKey(0))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir))
  ckpt.save(0, state, {}, config=config)
  ckpt.close()
  return workdir


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  return _save_untrained(_config(), str(tmp_path_factory.mktemp('teacher')))


@pytest.mark.parametrize('objective', ['ct', 'cd', 'meanflow'])
def test_train_and_draw_in_one_and_two_steps(objective, request, tmp_path):
  overrides = ({'training.teacher_workdir': request.getfixturevalue('teacher_dir'),
                'training.teacher_init': True} if objective == 'cd' else {})
  config = _config(rf_mixture if objective == 'meanflow' else ve_mixture, objective, **overrides)
  state = training.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  if objective == 'cd':   # started from the teacher: two small Adam steps away from it
    start = score_sde.load(config.training.teacher_workdir).params
    gap = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       state.params, start)
    assert max(jax.tree.leaves(gap)) < 3 * config.optim.lr
  with np.load(os.path.join(tmp_path, 'samples', 'step_2.npz')) as f:
    two = f['samples']
  assert two.shape == (64, 2) and np.all(np.isfinite(two))
  if objective == 'cd':   # drawn like 'ct'
    return
  config.sampling.num_steps = 1
  sample_fn = generation.get_sample_fn(config, sde_lib.get_sde(config), models.get_model(config))
  one, _, nfe = generation.draw(sample_fn, state.ema_params, jax.random.PRNGKey(0), 64)
  assert nfe == 1 and one.shape == (64, 2) and np.all(np.isfinite(one))
  assert not np.allclose(one, two)


# 'cd' draws its noise and levels as 'ct' does; only its deterministic teacher step differs.
@pytest.mark.parametrize('objective', ['ct', 'meanflow'])
def test_one_step_on_eight_devices_equals_one_device(objective):
  config = _config(rf_mixture if objective == 'meanflow' else ve_mixture, objective)
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  optimizer = train_state.get_optimizer(config.optim)
  state = train_state.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))
  state = state.replace(step=state.step + 5)   # CT: a curriculum stage past the first
  step_fn, _ = losses.get_step_fns(config, sde, model, optimizer)
  x, rng = toy.gaussian_mixture().sample(jax.random.PRNGKey(1), 64), jax.random.PRNGKey(2)
  expected, expected_metrics = jax.jit(step_fn)(state, {'image': x}, rng)
  mesh = parallel.make_mesh()
  assert mesh.size == 8
  p_state, metrics = parallel.data_parallel_step(step_fn, mesh)(
      parallel.replicate_global(state, mesh),
      parallel.put_batch({'image': parallel.shard(x, 8)}, mesh), rng)
  np.testing.assert_allclose(float(metrics['loss']), float(expected_metrics['loss']), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5,
                                                       atol=2e-6),
               parallel.to_local(p_state).params, expected.params)


def _stored(config, path):
  os.makedirs(path)
  identity.write_config_json(config, str(path), has_checkpoint=False)
  return str(path)


def test_bad_input_is_one_line(tmp_path):
  def fails(config, match, mode='train'):
    with pytest.raises(ConfigError, match=match) as info:
      config_checks.check(config, mode)
    assert '\n' not in str(info.value)
  fails(_config(**{'sampling.method': 'few_step'}, **{'training.snapshot_sampling': False}),
        r"few_step' draws from models trained for it .* training.objective=None", 'sample')
  fails(_config(objective='ct', **{'sampling.method': 'heun'}), "few_step' only, not 'heun'")
  fails(_config(rf_mixture, 'meanflow', **{'model.two_times': False}), 'model.two_times=True')
  fails(_config(**{'training.teacher_workdir': str(tmp_path)}), 'has no effect')
  fails(_config(**{'training.teacher_init': True}), 'teacher_init has no effect')
  fails(_config(objective='ct', **{'training.teacher_substeps': 4}),
        'teacher_substeps has no effect')
  fails(_config(objective='cd', **{'training.consistency_ratio': 1.0}), 'must be > 1')
  sde = sde_lib.get_sde(_config())
  times = schedules.get_time_grid('edm', sde, 4, 1e-3)
  grid = grid_files.write_grid(str(tmp_path / 'grid.json'), times,
                               schedules.scaled_sigma(sde, times), sde,
                               {'method': 'unipc', 'num_steps': 3})
  fails(_config(objective='ct', **{'sampling.time_schedule': 'optimised',
                                   'sampling.grid_path': grid}),
        r'has 4 points .* this sampler needs 3')


def test_teacher_must_fit_the_student(tmp_path):
  with pytest.raises(ConfigError, match='needs a teacher: set training.teacher_workdir'):
    training.train_and_evaluate(_config(objective='cd'), str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
  student = _config(objective='cd', **{'training.teacher_workdir': str(tmp_path / 'missing')})
  with pytest.raises(MissingFileError, match='teacher_workdir .* does not exist'):
    teacher.check(student)
  cases = [(_config(rf_mixture), r'trained with RectifiedFlow\(.*this run has VESDE\('),
           (_config(**{'model.sigma_max': 5.0}), r'VESDE\(sigma_min=0.01, sigma_max=5.0'),
           (_config(**{'data.dim': 3}), r'data of shape \(3,\); this run has \(2,\)'),
           (_config(objective='ct'), "few-step model .*'ct'"),
           (_config(**{'model.nf': 16}), 'teacher_init=True .* model.nf is 16 there and 32 here')]
  student.training.teacher_init = True
  for i, (config, match) in enumerate(cases):
    student.training.teacher_workdir = _stored(config, tmp_path / str(i))
    with pytest.raises(ConfigError, match=match) as info:
      teacher.check(student)
    assert '\n' not in str(info.value)


def test_consistency_objectives_take_edm_preconditioning():
  """A consistency model's network may be EDM-preconditioned (the usual choice): the loss builds
  and traces (unlike the unweighted regression objectives, which refuse EDM's weighting)."""
  config = _config(objective='cd', **{'model.precond': 'edm'})
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  params = jax.eval_shape(lambda: train_state.restore_template(config, model)).params
  options = losses.few_step_options(config, toy.gaussian_mixture().score_fn(sde))
  loss_fn = losses.get_loss_fn(sde, model, train=True, objective='cd', few_step=options)
  x = jax.ShapeDtypeStruct((8, 2), np.float32)
  loss, per_example = jax.eval_shape(loss_fn, params, x, jax.random.PRNGKey(2), 0)
  assert loss.shape == () and per_example.shape == (8,)
  with pytest.raises(ConfigError, match="'x0' cannot be combined with model.precond='edm'"):
    losses.get_loss_fn(sde, model, train=True, objective='x0')


def test_meanflow_on_the_image_network():
  """DDPM++ with a second time (model.two_times): its extra parameters are exactly the span
  embedding's (two Dense layers of width 4 nf), and the MeanFlow loss builds and traces."""
  from configs.rf import digits_ddpmpp_continuous, digits_ddpmpp_meanflow
  count = lambda config: sum(int(np.prod(p.shape)) for p in jax.tree.leaves(jax.eval_shape(
      lambda: train_state.restore_template(config, models.get_model(config))).params))
  config, plain = digits_ddpmpp_meanflow.get_config(), digits_ddpmpp_continuous.get_config()
  width = 4 * config.model.nf
  assert count(config) - count(plain) == 2 * (width * width + width)
  config_checks.check(config, 'train')
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  params = jax.eval_shape(lambda: train_state.restore_template(config, model)).params
  loss_fn = losses.get_loss_fn(sde, model, train=True, objective='meanflow',
                               few_step=losses.few_step_options(config))
  x = jax.ShapeDtypeStruct((4,) + tuple(config.data.image_size for _ in range(2)) + (1,),
                           np.float32)
  loss, per_example = jax.eval_shape(loss_fn, params, x, jax.random.PRNGKey(0), 0)
  assert loss.shape == () and per_example.shape == (4,)
