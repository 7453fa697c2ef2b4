"""Failing well, second round (issue 22): --mode=eval, --mode=train_classifier, conditional
sampling, experiment specs and the launcher; too little memory, a full disk, a read-only
workdir, a signal at start-up. (A host that dies: test_multihost's crashed launch.)

Every case is graded the same way: a non-zero exit status, one line on stderr, and nothing that
records a run changed or wrongly reused. The entry points run in this process (``cli.run`` on
train.py / sample.py / the experiments' ``__main__``, as a user's command line) where that shows
everything, and as subprocesses where the case is the process itself: a signal before the
handlers of the training loop exist, a read-only or full file system (a mount namespace).
"""
import errno
import json
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers
from score_sde import cli, launch, parallel

ROOT = helpers.ROOT
# The class-conditional toy: one run serves eval, guidance, inpainting and classifier checks.
CONFIG = '--config=configs/vp/toy_spiral_conditional.py'
RUN = [CONFIG, *helpers.TINY_FLAGS, '--config.training.n_iters=4',
       '--config.training.snapshot_freq=4', '--config.training.eval_freq=4']
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')


def _in_process(run, argv):
  cwd, old_argv = os.getcwd(), sys.argv
  os.chdir(ROOT)
  try:
    with pytest.raises(SystemExit) as exit_info:
      run(argv)
  finally:
    os.chdir(cwd)
    sys.argv = old_argv
  return exit_info.value.code or 0


def run_cli(capsys, script, *args):
  """(exit status, stdout, stderr) of ``python <script> <args>``, run in this process."""
  main = helpers.entry_point(script).main
  capsys.readouterr()
  code = _in_process(lambda argv: cli.run(main, argv=argv), [script, *args])
  return (code, *capsys.readouterr())


def run_module(capsys, module, *args):
  """(exit status, stdout, stderr) of ``python -m <module> <args>``, run in this process."""
  helpers.reset_flags()   # the module's __main__ defines its own
  capsys.readouterr()

  def run(argv):
    sys.argv = argv
    runpy.run_module(module, run_name='__main__', alter_sys=False)
  code = _in_process(run, [module, *args])
  return (code, *capsys.readouterr())


def assert_one_line(code, err, expected, status=2):
  assert code == status, err[-3000:]
  assert err.startswith('Error: ') and err.count('\n') == 1 and len(err) < 500, err[-3000:]
  assert expected in err, err


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """4 steps of the tiny class-conditional VP toy through train.py: checkpoint 4."""
  workdir = str(tmp_path_factory.mktemp('run'))
  main = helpers.entry_point('train.py').main
  assert _in_process(lambda argv: cli.run(main, argv=argv),
                     ['train.py', *RUN, f'--workdir={workdir}']) == 0
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['4']
  return workdir


BAD_CONFIGS = [
    # (script, arguments, what the one line must contain)
    ('train.py', ['--mode=train_classifier', '--config.classifier.n_iters=0'],
     'classifier.n_iters = 0 must be positive'),
    ('train.py', ['--mode=train_classifier', '--config.classifier.batch_size=0'],
     'classifier.batch_size = 0 must be positive'),
    ('train.py', ['--mode=train_classifier', '--config.classifier.lr=nan'],
     'classifier.lr = nan is not a number'),
    ('train.py', ['--config.optim.grad_clip=nan'], 'optim.grad_clip = nan is not a number'),
    ('train.py', ['--config.training.label_dropout=1.5'],
     'training.label_dropout = 1.5 must be in [0, 1]'),
    ('sample.py', ['--labels=0,1', '--config.sampling.guidance_scale=2',
                   '--config.sampling.guidance_sigma_min=5',
                   '--config.sampling.guidance_sigma_max=1'],
     'guidance interval [sampling.guidance_sigma_min, guidance_sigma_max] = [5.0, 1.0] is empty'),
]


def test_bad_settings_of_the_newer_modes_are_one_line_and_change_nothing(capsys, run_dir):
  before = helpers.file_stats(run_dir)
  for script, args, expected in BAD_CONFIGS:
    code, _, err = run_cli(capsys, script, *RUN, f'--workdir={run_dir}', *args)
    assert_one_line(code, err, expected)
  assert helpers.file_stats(run_dir) == before
  assert not os.path.exists(os.path.join(run_dir, 'classifier'))


def test_eval_checks_the_run_and_ties_its_results_to_the_config(capsys, run_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(run_dir, workdir)
  loss = ['--config.eval.enable_loss=True', '--config.eval.enable_sampling=False',
          '--config.eval.enable_bpd=False']
  code, _, err = run_cli(capsys, 'train.py', '--mode=eval', *RUN, f'--workdir={workdir}', *loss,
                         '--config.training.sde=vesde')
  assert_one_line(code, err, "training.sde = 'vpsde' there, 'vesde' here")
  assert not os.path.exists(os.path.join(workdir, 'eval'))

  def evaluate(num_examples):
    code, out, err = run_cli(capsys, 'train.py', '--mode=eval', *RUN, f'--workdir={workdir}',
                             *loss, f'--config.eval.loss_num_examples={num_examples}')
    assert code == 0, err[-3000:]
    with open(os.path.join(workdir, 'eval', 'report_4.json')) as f:
      return out, json.load(f)
  out, report = evaluate(64)
  assert '(0 done before)' in out and report['loss']['num_examples'] == 64
  out, report = evaluate(128)     # other settings: the stored numbers are not reused
  assert '(0 done before' in out and 'eval.loss_num_examples = 64 there, 128 here' in out, out
  assert report['loss']['num_examples'] == 128
  out, _ = evaluate(128)
  assert '(1 done before)' in out


def test_non_finite_or_out_of_range_inpainting_inputs_are_refused(capsys, run_dir, tmp_path):
  image, mask = np.zeros((4, 2), np.float32), np.ones((4, 2), np.float32)
  cases = []
  for name, value, expected in (('image', np.nan, 'inpaint_image file'),
                                ('mask', np.nan, 'mask file'),
                                ('mask', 2.0, 'must be in [0, 1]')):
    arrays = {'image': image.copy(), 'mask': mask.copy()}
    arrays[name][1, 0] = value
    paths = {}
    for k, v in arrays.items():
      paths[k] = str(tmp_path / f'{name}_{value}_{k}.npy')
      np.save(paths[k], v)
    cases.append((paths, expected))
  before = helpers.file_stats(run_dir)
  for paths, expected in cases:
    code, _, err = run_cli(capsys, 'sample.py', *RUN, f'--workdir={run_dir}',
                           f'--inpaint_image={paths["image"]}', f'--inpaint_mask={paths["mask"]}',
                           f'--outdir={tmp_path}/out')
    assert_one_line(code, err, expected)
    if 'NaN' in expected:
      assert 'NaN' in err
  assert helpers.file_stats(run_dir) == before and not os.path.exists(tmp_path / 'out')


def test_launcher_arguments_and_a_busy_port_are_one_line(capsys, monkeypatch):
  command = ['--', 'train.py', CONFIG, '--workdir=/nowhere']
  with socket.socket() as busy:
    busy.bind(('localhost', 0))
    busy.listen()
    port = busy.getsockname()[1]
    for args, expected in (
        (['--local_devices=0'], '--local_devices=0: each process needs at least 1 device'),
        (['--local_devices=-3'], '--local_devices=-3: each process needs at least 1 device'),
        (['--local_devices=x'], "argument --local_devices: invalid int value: 'x'"),
        ([f'--port={port}'], f'--port={port} is in use on this host')):
      capsys.readouterr()
      code = launch.main(['--num_processes=2', *args, *command])
      assert_one_line(code, capsys.readouterr().err, expected)
    # Process 0 started by hand on a busy port: one line, not JAX's crash.
    monkeypatch.setenv(parallel.ENV_COORDINATOR, f'localhost:{port}')
    monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, '2')
    monkeypatch.setenv(parallel.ENV_PROCESS_ID, '0')
    with pytest.raises(parallel.DistributedError,
                       match=f'The coordinator port {port} .* is in use on this host'):
      parallel.initialize_distributed(False, timeout=1)


def test_bad_experiment_specs_are_one_line(capsys, tmp_path):
  spec = '--spec=configs/experiments/sde_variants_toy.py'
  for args, expected in (
      (["--spec.nfe=('ten',)"], "spec.nfe: 'ten' is not an NFE budget (a positive integer)"),
      (['--spec.nfe=()'], 'spec.nfe is empty'),
      (['--spec.train_axes.training.sde=()'], 'Train axis training.sde is empty')):
    code, _, err = run_module(capsys, 'score_sde.experiments', spec, f'--workdir={tmp_path}/x',
                              *args)
    assert_one_line(code, err, expected)
  assert not os.path.exists(tmp_path / 'x')


def test_batch_too_big_for_the_device_memory_is_one_line(capsys, monkeypatch, run_dir, tmp_path):
  """A small configured device memory stands in for a big batch on a real accelerator: the
  compiled step's memory analysis is compared with it before the first step (sample.py: the
  first call)."""
  monkeypatch.setenv(parallel.ENV_DEVICE_MEMORY, '4K')
  code, _, err = run_cli(capsys, 'sample.py', *RUN, f'--workdir={run_dir}',
                         f'--outdir={tmp_path}/samples', '--config.sampling.method=pc',
                         '--config.sampling.num_steps=2')
  assert_one_line(code, err, 'Sampling needs ')
  assert re.search(r'per device \(sampling\.batch_size=64, 8 per device\); \S+ has 4\.0 KiB '
                   rf'\({parallel.ENV_DEVICE_MEMORY}\)\. Lower sampling\.batch_size', err), err
  assert not os.path.exists(tmp_path / 'samples')
  code, _, err = run_cli(capsys, 'train.py', *RUN, f'--workdir={tmp_path}')
  assert_one_line(code, err, 'The train step needs ')
  assert re.search(r'per device \(training\.batch_size=64, 8 per device\); \S+ has 4\.0 KiB '
                   rf'\({parallel.ENV_DEVICE_MEMORY}\)\. Lower training\.batch_size, or set '
                   r"model\.remat=True or model\.dtype='bfloat16'", err), err
  assert not os.path.exists(tmp_path / 'checkpoints' / '4')


def test_a_write_that_fails_late_is_one_line(capsys, monkeypatch, run_dir, tmp_path):
  """A disk that fills after the up-front checks (here: when sample.py writes its samples)."""
  def full(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device', str(path))
  monkeypatch.setattr(np, 'savez_compressed', full)
  code, _, err = run_cli(capsys, 'sample.py', *RUN, f'--workdir={run_dir}',
                         f'--outdir={tmp_path}', '--config.sampling.method=pc',
                         '--config.sampling.num_steps=2')
  assert_one_line(code, err,
                  f'No space left on device: {tmp_path}/samples_step4_pc_nfe2_seed0.npz.')


# ---------------------------------------------------------------------------------------------
# Subprocesses: the process itself is the case.

def _env():
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
              XLA_FLAGS=os.environ['SCORE_SDE_TEST_XLA_FLAGS'])


def test_sigterm_at_start_up_is_not_lost(tmp_path):
  """SIGTERM as soon as train.py can catch it (long before JAX is imported): the run stops
  before its first step, exits 0, and writes no checkpoint."""
  proc = subprocess.Popen([sys.executable, 'train.py', *RUN, f'--workdir={tmp_path}'],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline:   # SigCgt: the signals this process catches
    with open(f'/proc/{proc.pid}/status') as f:
      caught = int(re.search(r'SigCgt:\s*([0-9a-f]+)', f.read()).group(1), 16)
    if caught & (1 << (signal.SIGTERM - 1)) or proc.poll() is not None:
      break
    time.sleep(0.005)
  t_signal = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert 'SIGTERM received during start-up: stopping before the first step' in out, out
  assert 'Traceback' not in err, err
  assert not os.path.exists(tmp_path / 'checkpoints' / '4')
  assert time.monotonic() - t_signal < 120


# In a mount namespace (``unshare``: root, or a user with user namespaces): the run's workdir
# bound read-only and a 1 MiB tmpfs. One interpreter runs the three commands in turn, each as
# ``cli.run`` of its entry point; the tmpfs is listed from inside before it disappears.
_DRIVER = """
import contextlib, io, json, os, sys
sys.path.insert(0, 'tests')
import helpers
from score_sde import cli
commands, listed = json.loads(sys.argv[1]), sys.argv[2]   # cli.run replaces sys.argv
results = []
for argv in commands:
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    main = helpers.entry_point(argv[0]).main
    try:
      cli.run(main, argv=argv)
    except SystemExit as e:
      results.append([e.code or 0, err.getvalue()])
listing = sorted(os.listdir(listed))
print('RESULTS', json.dumps([results, listing]))
"""


@pytest.fixture(scope='module')
def namespace_runs(run_dir, tmp_path_factory):
  namespace = ['unshare', '--user', '--map-root-user', '--mount']
  if shutil.which('unshare') is None or subprocess.run([*namespace, 'true']).returncode:
    pytest.skip('needs mount namespaces (unshare) for a read-only workdir and a full disk')
  disk = str(tmp_path_factory.mktemp('disk'))
  workdir = os.path.join(disk, 'run')
  commands = [
      ['sample.py', *RUN, f'--workdir={run_dir}'],
      ['train.py', '--mode=eval', *RUN, f'--workdir={run_dir}', '--config.eval.enable_loss=True'],
      ['train.py', *RUN, f'--workdir={workdir}', '--config.training.n_iters=400',
       '--config.training.log_freq=100', '--config.training.eval_freq=1000']]
  setup = (f'mount --bind {run_dir} {run_dir} && mount -o remount,bind,ro {run_dir} && '
           f'mount -t tmpfs -o size=1m tmpfs {disk}')
  result = subprocess.run(
      [*namespace, 'sh', '-c', f'{setup} && exec "$@"', 'sh', sys.executable, '-c', _DRIVER,
       json.dumps(commands), f'{workdir}/checkpoints'],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert 'RESULTS' in result.stdout, result.stderr[-3000:]
  (sample, evaluate, train), listing = json.loads(result.stdout.split('RESULTS', 1)[1])
  return dict(sample=sample, eval=evaluate, train=train, listing=listing, workdir=workdir)


def test_read_only_workdir_is_checked_before_any_work(namespace_runs, run_dir):
  """sample.py and --mode=eval on a workdir they cannot write: one line before any work, not
  an OSError after it."""
  assert_one_line(*namespace_runs['sample'], f'--outdir {run_dir}/samples: {run_dir} is not '
                  'writable (a read-only file system).')
  assert_one_line(*namespace_runs['eval'], f'--workdir {run_dir}: {run_dir} is not writable')
  assert not os.path.exists(os.path.join(run_dir, 'samples'))
  assert not os.path.exists(os.path.join(run_dir, 'eval'))


def test_disk_full_during_a_save_is_one_line_and_keeps_the_earlier_steps(namespace_runs):
  """The 1 MiB disk fills after a few checkpoints of the tiny run: the checkpoint that did not
  fit is named, its partial files are gone, the earlier ones are listed as intact."""
  code, err = namespace_runs['train']
  directory = os.path.join(namespace_runs['workdir'], 'checkpoints')
  assert_one_line(code, err, f'The disk is full at {directory}: step ')
  match = re.search(r'step (\d+) was not saved; steps? ([\d, ]+) (are|is) intact\.', err)
  assert match, err
  lost, intact = int(match.group(1)), [int(s) for s in match.group(2).split(', ')]
  assert sorted(map(int, namespace_runs['listing'])) == intact == list(range(4, lost, 4))
