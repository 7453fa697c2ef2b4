"""Failing well: bad input stops early with one short message and changes nothing; signals during
a save, corrupt and mismatched checkpoints, and non-finite parameters are handled.

The entry points run in-process (``cli.run`` on ``train.main`` / ``sample.main``, stderr
captured, the exit status read from ``SystemExit``); only the corrupt-checkpoint case needs a
subprocess, to see that nothing prints after the message at interpreter exit.
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from absl import flags

import helpers
from score_sde import checkpointing, config_checks, errors, losses, models, train_state
from score_sde import training
from score_sde.checkpointing import identity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '--config=configs/vp/toy_spiral.py'
TINY = helpers.TINY_FLAGS
# ml_collections loads config files with importlib's deprecated load_module().
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')


def _run(script, *args):
  return helpers.run_entry_point(script, *args)


def run_cli(capsys, script, *args):
  """(exit status, stdout, stderr) of ``python <script> <args>``, run in this process."""
  capsys.readouterr()
  code = _run(script, *args)
  out, err = capsys.readouterr()
  return code, out, err


def _scalars(logdir, tag):
  """{step: value} of one TensorBoard scalar (TFRecord framing, Event protos)."""
  from tensorboardX.proto import event_pb2
  values = {}
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      values.update({event.step: v.simple_value for v in event.summary.value if v.tag == tag})
  return values


def _final_state(workdir):
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  step = ckpt.latest_step()
  template = train_state.init_train_state(config, models.get_model(config),
                                       train_state.get_optimizer(config.optim),
                                       jax.random.PRNGKey(0))
  state, data = ckpt.restore(template)
  ckpt.close()
  return step, state, data


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """12 uninterrupted steps through train.py: a workdir with checkpoints 8 and 12."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  assert _run('train.py', CONFIG, f'--workdir={workdir}', *TINY) == 0
  assert checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                    read_only=True).all_steps() == [8, 12]
  return workdir


BAD_TRAIN_INPUTS = [
    # (arguments, what the message must contain)
    (['--config.training.sde=bridge'], "training.sde 'bridge'; valid: ['edm', 'rectified_flow'"),
    (['--config.model.name=unet9000'], "model.name 'unet9000'; valid: ['ddpm', 'dit', 'mlp'"),
    (['--config.model.precond=karras'], "model.precond 'karras'; valid: ['paper', 'edm']"),
    (['--config.model.name=ncsnv2_64', '--config.model.precond=edm'],
     "model.precond 'edm' is not available for model 'ncsnv2_64'"),
    (['--config.data.dataset=imagenet9'], "dataset 'imagenet9'; valid: ['checkerboard'"),
    (['--config.data.dataset=lsun/kitchenx'], 'valid: classroom, bedroom'),
    (['--config.optim.optimizer=SGD'], "optim.optimizer 'SGD'; valid: ['Adam']"),
    (['--config.data.latent_size=4'], 'data.latent_size is set but data.latents names no '
                                      'autoencoder'),
    (['--config.sampling.method=magic'], "sampling.method 'magic'; valid: ['ddim', 'dpm_solver'"),
    (['--config.sampling.predictor=rk4'], "sampling.predictor 'rk4'; valid: ['ancestral"),
    (['--config.sampling.corrector=hmc'], "sampling.corrector 'hmc'; valid: ['ald'"),
    (['--config.training.batch_size=60'], 'Batch size 60 is not divisible'),
    (['--config.training.batch_size=0'], 'training.batch_size = 0 must be positive'),
    (['--config.training.log_freq=0'], 'training.log_freq = 0 must be positive'),
    (['--config.training.snapshot_freq_for_preemption=0'],
     'training.snapshot_freq_for_preemption = 0 must be positive'),
    (['--config.optim.lr=-1.0'], 'optim.lr = -1.0 must be positive'),
    (['--config.sampling.method=pc', '--config.sampling.num_steps=0'],
     'sampling.num_steps must be >= 1'),
    (['--config.training.n_iter=5'], "Unknown config key 'n_iter' in --config.training.n_iter=5;"
                                     " did you mean 'n_iters'?"),
    (['--config.training.n_iters=abc'], "--config.training.n_iters=abc: invalid literal"),
    (['--config.model.nf=None'], '--config.model.nf=None: model.nf cannot be None (it is 32 '
                                 'here, and not optional); give a value.'),
    (['--config.model.nf=48'], 'model.nf = 32 there, 48 here'),
    (['--config.training.sde=vesde'], "training.sde = 'vpsde' there, 'vesde' here"),
    (['--config.optim.grad_clip=0'], 'optim.grad_clip = 1.0 there, 0.0 here'),
    # settings the rest of the config leaves without effect
    (['--config.training.continuous=False', '--config.training.likelihood_weighting=True'],
     'training.likelihood_weighting=True has no effect with training.continuous=False'),
    (['--config.model.dropout=0.2'], "model.dropout=0.2 has no effect on model 'mlp'"),
    (['--config.data.random_flip=True'], 'data.random_flip=True has no effect on 2-D data'),
    (['--config.training.label_dropout=0.3'],
     '--config.training.label_dropout has no effect: the model is not class-conditional'),
    (['--config.model.embedding_type=positional', '--config.model.fourier_scale=4'],
     "--config.model.fourier_scale has no effect with model.embedding_type='positional'"),
    (['--config.training.snapshot_sampling=True', '--config.sampling.method=pc',
      '--config.sampling.rtol=0.001'], "--config.sampling.rtol has no effect with "
                                       "sampling.method='pc'"),
]


@pytest.mark.parametrize('args,expected', BAD_TRAIN_INPUTS,
                         ids=[a[-1].split('.')[-1] for a, _ in BAD_TRAIN_INPUTS])
def test_bad_input_is_one_short_message_and_changes_nothing(capsys, reference, args, expected):
  before = helpers.file_stats(reference)
  code, _, err = run_cli(capsys, 'train.py', CONFIG, f'--workdir={reference}', *TINY, *args)
  assert code == 2, err
  assert err.startswith('Error: ') and len(err.splitlines()) == 1 and len(err) < 400, err
  assert expected in err, err
  assert helpers.file_stats(reference) == before


@pytest.mark.parametrize('args,expected', [
    (['--config=configs/vp/nope.py'], "No such file or directory: 'configs/vp/nope.py'"),
    (['--num_samples=0'], '--num_samples=0: 0 is not a positive integer'),
    (['--num_samples=-5'], '--num_samples=-5'),
    (['--config.training.sde=vesde'], "training.sde = 'vpsde' there, 'vesde' here"),
    (['--config.sampling.time_schedule=edm', '--config.sampling.method=pc'],
     "time_schedule 'edm' is not available for method 'pc'"),
    (['--step=5'], 'No checkpoint for step 5'),
    (['--config.sampling.num_steps=10'], "--config.sampling.num_steps has no effect with "
                                         "sampling.method='ode', which reads rtol, atol"),
    (['--config.sampling.method=pc', '--config.sampling.snr=0.3'],
     "--config.sampling.snr has no effect with sampling.corrector='none'"),
])
def test_sample_bad_input(capsys, reference, args, expected):
  before = helpers.file_stats(reference)
  config, args = (args[:1], args[1:]) if args[0].startswith('--config=') else ([CONFIG], args)
  code, _, err = run_cli(capsys, 'sample.py', *config, f'--workdir={reference}', *TINY, *args)
  assert code == 2 and expected in err and len(err.splitlines()) == 1, err
  assert helpers.file_stats(reference) == before


def test_every_shipped_config_passes_the_checks():
  """The checks are not stricter than the paper's configs (e.g. NCSNv2's grad_clip = -1: off)."""
  import glob
  import importlib
  names = [p[len(ROOT) + 1:-3].replace('/', '.') for p in glob.glob(f'{ROOT}/configs/*/**/*.py',
                                                                     recursive=True)]
  names = [n for n in names                      # experiment specs are not configs
           if not n.endswith('__init__') and not n.startswith('configs.experiments.')]
  assert len(names) > 30
  for name in names:
    config = importlib.import_module(name).get_config()
    # Stable Diffusion configs without data contexts sample converted weights (--prompt) only.
    sample_only = config.model.name == 'unet_condition' and not config.data.get('context')
    config_checks.check(config, 'sample' if sample_only else 'train')


def test_none_on_the_command_line_is_none_for_optional_fields(capsys, reference):
  """--config.x=None sets None where the field may be None (a typed placeholder, or None in the
  config): not the string 'None', and no parse error for a number."""
  code, _, err = run_cli(capsys, 'train.py', CONFIG, f'--workdir={reference}', *TINY,
                         '--config.training.objective=None', '--config.eval.end_ckpt=None',
                         '--config.data.num_classes=None', '--config.model.nf=48')
  assert code == 2 and 'model.nf = 32 there, 48 here' in err   # the checks ran past them
  config = flags.FLAGS.config
  assert (config.training.objective, config.eval.end_ckpt, config.data.num_classes) == (
      None, None, None)


def test_sample_missing_workdir_says_so(capsys, tmp_path):
  code, _, err = run_cli(capsys, 'sample.py', CONFIG, f'--workdir={tmp_path}/nowhere', *TINY)
  assert code == 2 and f'--workdir {tmp_path}/nowhere does not exist' in err, err


@pytest.mark.parametrize('script', ['train.py', 'sample.py'])
def test_missing_config_file_without_overrides_is_one_line(capsys, tmp_path, script):
  # Without --config.* overrides ml_collections defers the file's IOError to the config's first
  # use, inside the program; with them it raises while parsing (test_sample_bad_input).
  code, _, err = run_cli(capsys, script, '--config=configs/vp/nope.py', f'--workdir={tmp_path}')
  assert code == 2, err
  assert err == ("Error: Cannot load the config file: [Errno 2] No such file or directory: "
                 "'configs/vp/nope.py'\n"), err


def test_workdir_that_is_a_file_is_one_line(capsys, tmp_path):
  (tmp_path / 'file').write_text('')
  for workdir, what in ((tmp_path / 'file', 'is a file'),
                        (tmp_path / 'file' / 'sub', f'is under {tmp_path}/file, a file')):
    code, _, err = run_cli(capsys, 'train.py', CONFIG, f'--workdir={workdir}', *TINY)
    assert code == 2 and err == (f'Error: --workdir {workdir} {what}; give a directory (it is '
                                 'created if missing).\n'), err


@pytest.mark.parametrize('path,expected', [
    ('nowhere', "is not a directory; set data.path to a folder of .png/.jpg/.jpeg images."),
    ('empty', 'No images (.png, .jpg, .jpeg) found under '),
])
def test_bad_image_folder_is_one_line(capsys, tmp_path, path, expected):
  (tmp_path / 'empty').mkdir()
  code, _, err = run_cli(capsys, 'train.py', '--config=configs/vp/digits_ddpmpp_continuous.py',
                         f'--workdir={tmp_path}/run', '--config.data.dataset=folder',
                         f'--config.data.path={tmp_path}/{path}', '--config.training.n_iters=1')
  assert code == 2 and err.startswith('Error: ') and len(err.splitlines()) == 1, err
  assert expected in err, err
  assert not (tmp_path / 'run').exists()


def test_bad_paper_checkpoint_is_one_line(capsys, tmp_path):
  (tmp_path / 'garbage').write_bytes(b'not msgpack at all')
  (tmp_path / 'empty').mkdir()
  for path, expected in (
      (tmp_path / 'none', f"No paper checkpoint at '{tmp_path}/none'."),
      (tmp_path / 'empty', f"No checkpoint_<n> file in directory '{tmp_path}/empty'."),
      (tmp_path / 'garbage', f"'{tmp_path}/garbage' is not a paper-format checkpoint: msgpack "
                             'cannot read it')):
    code, _, err = run_cli(capsys, 'sample.py', CONFIG, f'--workdir={tmp_path}',
                           f'--paper_checkpoint={path}', *TINY)
    assert code == 2 and err.startswith('Error: ' + expected) and len(err.splitlines()) == 1, err


def test_traceback_flag_shows_the_stack(capsys, reference):
  with pytest.raises(errors.ConfigError, match="Unknown training.sde 'bridge'"):
    run_cli(capsys, 'train.py', CONFIG, f'--workdir={reference}', *TINY,
            '--config.training.sde=bridge', '--traceback')


def test_unexpected_exceptions_keep_their_traceback(monkeypatch, capsys, reference):
  def bug(*args, **kwargs):
    raise KeyError('a bug')
  monkeypatch.setattr(training, 'train_and_evaluate', bug)
  with pytest.raises(KeyError, match='a bug'):
    run_cli(capsys, 'train.py', CONFIG, f'--workdir={reference}', *TINY)


def test_run_identity_allows_run_length_and_sampling_changes(reference):
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(reference), read_only=True)
  stored = ckpt.stored_config(12)
  changed = identity.config_to_dict(stored)
  changed['training'].update(n_iters=100, log_freq=1, snapshot_freq=50)
  changed['sampling'].update(method='pc', num_steps=3)
  changed['eval']['enable_bpd'] = True
  assert identity.config_differences(stored, changed) == []
  changed['model']['num_layers'] = 3
  assert identity.config_differences(stored, changed) == [('model.num_layers', 2, 3)]


def test_checkpoints_without_a_stored_config_still_restore(tmp_path, reference):
  old = str(tmp_path / 'old')
  shutil.copytree(reference, old)
  shutil.rmtree(os.path.join(checkpointing.checkpoint_dir(old), '12', 'config'))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(old), read_only=True)
  assert ckpt.stored_config(12) is None
  step, state, data = _final_state(old)
  assert step == 12 and int(state.step) == 12 and data == {'train': {'step': 12},
                                                           'eval': {'step': 2}}


def _sigterm_during_save(monkeypatch, at_step, when):
  """SIGTERM to this process while checkpoint ``at_step`` is being written: just before orbax
  is asked to save it, or just after (the asynchronous write still in flight)."""
  original = checkpointing.Checkpointer.save

  def save(self, step, *args, **kwargs):
    if step == at_step and when == 'before':
      os.kill(os.getpid(), signal.SIGTERM)
    original(self, step, *args, **kwargs)
    if step == at_step and when == 'after':
      os.kill(os.getpid(), signal.SIGTERM)
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', save)


@pytest.mark.parametrize('at_step,when', [(4, 'before'), (8, 'after')])
def test_sigterm_during_a_save_saves_once_exits_0_and_resumes_exactly(
    capsys, monkeypatch, tmp_path, reference, at_step, when):
  workdir = str(tmp_path)
  with monkeypatch.context() as m:
    _sigterm_during_save(m, at_step, when)
    code, out, err = run_cli(capsys, 'train.py', CONFIG, f'--workdir={workdir}', *TINY)
  assert code == 0, err
  assert f'SIGTERM received: saved step {at_step}; stopping.' in out
  assert 'Traceback' not in err and 'Error' not in err, err
  steps = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                     read_only=True).all_steps()
  assert steps == [at_step]

  code, out, err = run_cli(capsys, 'train.py', CONFIG, f'--workdir={workdir}', *TINY)
  assert code == 0 and f'Resumed from step {at_step}' in out, err
  assert err == ''   # no orbax warnings on a resume
  step, state, data = _final_state(workdir)
  ref_step, ref_state, ref_data = _final_state(reference)
  assert step == ref_step == 12 and data == ref_data
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               state, ref_state)
  # The eval stream resumed where it was: eval/loss at step 12 as in the uninterrupted run.
  resumed = _scalars(os.path.join(workdir, 'tensorboard'), 'eval/loss')
  straight = _scalars(os.path.join(reference, 'tensorboard'), 'eval/loss')
  assert resumed[12] == straight[12]


def test_non_finite_parameters_are_caught_before_a_save(monkeypatch, capsys, tmp_path):
  """The parameters become NaN in the step of a save while that step's loss is still finite:
  nothing is saved, and a fresh run's message says no checkpoint was written."""
  get_step_fns = losses.get_step_fns

  def poisoned(*args, **kwargs):
    train_step, eval_step = get_step_fns(*args, **kwargs)

    def step(state, batch, rng, axis_name=None):
      state, metrics = train_step(state, batch, rng, axis_name=axis_name)
      params = jax.tree.map(lambda p: jnp.where(state.step >= 4, jnp.nan, p), state.params)
      return state.replace(params=params), metrics
    return step, eval_step
  monkeypatch.setattr(losses, 'get_step_fns', poisoned)
  code, _, err = run_cli(capsys, 'train.py', CONFIG, f'--workdir={tmp_path}', *TINY)
  assert code == 2, err
  assert ('Parameters became NaN/inf before step 4; training stopped and no checkpoint was '
          'written. Lower optim.lr, raise optim.warmup or lower optim.grad_clip.') in err
  assert checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path)),
                                    read_only=True).all_steps() == []


@pytest.mark.parametrize('damage', ['garbage', 'no_metadata'])
def test_corrupt_latest_checkpoint_is_one_line_and_nothing_follows(tmp_path, reference, damage):
  workdir = str(tmp_path / 'run')
  shutil.copytree(reference, workdir)
  state_dir = os.path.join(checkpointing.checkpoint_dir(workdir), '12', 'state')
  if damage == 'garbage':
    for root, _, names in os.walk(state_dir):
      for name in names:
        if os.path.basename(root) == 'd':
          with open(os.path.join(root, name), 'wb') as f:
            f.write(b'\x00garbage')
  else:
    os.remove(os.path.join(state_dir, '_METADATA'))
  if damage == 'no_metadata':   # in-process: the message (the subprocess below: nothing after it)
    ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
    with pytest.raises(checkpointing.CheckpointError) as e:
      ckpt.restore(_final_state(reference)[1])
    assert str(e.value).startswith('Checkpoint step 12 is unreadable: state/_METADATA in ')
    assert 'the file is missing; move' in str(e.value) and 'resume from step 8' in str(e.value)
    return
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ['SCORE_SDE_TEST_XLA_FLAGS'])
  result = subprocess.run([sys.executable, 'sample.py', CONFIG, f'--workdir={workdir}', *TINY],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.count('\n') == 1, result.stderr[-3000:]   # one line, nothing after it
  message = result.stderr
  assert message.startswith('Error: Checkpoint step 12 is unreadable: state')
  # Whichever of the state's arrays orbax reads first is the one named (their order varies).
  assert re.search(r': array (step|params|ema_params|power_ema_params|opt_state)\S*: Requested '
                   r'byte range .* is not valid for value of size 8; ', message), message
  assert 'TensorStore' not in message and 'tensorstore_spec' not in message
  assert f'move {checkpointing.checkpoint_dir(workdir)}/12 away to resume from step 8' in message


def test_read_error_message_comes_from_the_tensorstore_error_under_orbax_wrapper():
  inner = ValueError('OUT_OF_RANGE: Error reading "ema_params.Dense_0.kernel/0.0" in OCDBT '
                     'database at local file "/w/checkpoints/12/state/": Requested byte range '
                     '[0, 3825) is not valid for value of size 8')
  try:
    try:
      raise inner
    except ValueError as e:
      raise Exception('Encountered error while reading array index: (slice(0, 32, 1),). See full '
                      'TensorStore details: <bound method spec of TensorStore({})>.') from e
  except Exception as e:  # noqa: BLE001
    outer = e
  file, cause = checkpointing.read_error_cause(outer)
  assert file == '/w/checkpoints/12/state/'
  assert cause == ('array ema_params/Dense_0/kernel: Requested byte range [0, 3825) is not valid '
                   'for value of size 8')
  # An error that names no file keeps its own type and first line, without TensorStore's spec.
  file, cause = checkpointing.read_error_cause(Exception(
      'Encountered error while reading array index: (). See full TensorStore details: <x>'))
  assert file is None and cause == 'Exception: Encountered error while reading array index: ().'
