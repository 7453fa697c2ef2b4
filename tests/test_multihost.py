"""Multi-host training for real: 2 processes x 4 CPU devices (``score_sde.launch``) against
1 process x 8 devices on the same global batch, preemption across hosts, a crashed host, and bad
input. The launches share one module fixture; JAX's persistent compilation cache lets later
launches skip the compiles of earlier ones.
"""
import contextlib
import glob
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs.vp import toy_spiral
from score_sde import checkpointing, datasets, losses, models, parallel, sde_lib, train_state
from score_sde import training
from score_sde.datasets import pipeline
from score_sde.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 900   # seconds for one launch on a (very) loaded 2-core machine; a hang still fails
HEARTBEAT = 10  # seconds: the crashed launch's survivor counts its peer as lost after this

# The tiny MLP run; every value also goes on the launched processes' command line. Adam's eps is
# raised from 1e-8 so that rounding differences in near-zero gradients (another all-reduce or
# fusion order) stay rounding differences instead of becoming +-lr updates.
# Sampling and evaluation (extra compiles) only where a check needs them.
TINY = {'model.nf': 32, 'model.num_layers': 2, 'training.batch_size': 64, 'training.log_freq': 4,
        'training.eval_freq': 1000, 'training.snapshot_freq': 8,
        'training.snapshot_freq_for_preemption': 4, 'optim.warmup': 2, 'optim.eps': 1e-3,
        'training.snapshot_sampling': False, 'sampling.method': 'pc', 'sampling.num_steps': 4,
        'sampling.batch_size': 64,
        'optim.decay': 'none'}   # runs stopped early and extended must share one lr schedule
SAMPLE = {'training.snapshot_sampling': True}
EVAL = {'training.eval_freq': 12}


def tiny_config(n_iters, **extra):
  config = toy_spiral.get_config()
  for key, value in {**TINY, **extra, 'training.n_iters': n_iters}.items():
    section, name = key.split('.')
    setattr(config[section], name, value)
  return config


def launch(workdir, n_iters, cache_dir, grace=3, heartbeat=None, **extra):
  """Starts 2 processes x 4 devices training the tiny config in ``workdir``; returns the Popen.
  ``heartbeat``: seconds of silence after which a process counts as lost (default 60)."""
  flags = [f'--config.{k}={v}' for k, v in {**TINY, **extra, 'training.n_iters': n_iters}.items()]
  cmd = [sys.executable, '-m', 'score_sde.launch', '--num_processes=2', '--local_devices=4',
         f'--grace={grace}', f'--log_dir={workdir}/logs', '--', 'train.py',
         '--config=configs/vp/toy_spiral.py', f'--workdir={workdir}', *flags]
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', PYTHONPATH=ROOT,
             XLA_FLAGS=os.environ['SCORE_SDE_TEST_XLA_FLAGS'])   # launch adds the device count
  if heartbeat is not None:
    env[parallel.ENV_HEARTBEAT_TIMEOUT] = str(heartbeat)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def kill_launches(*launchers):
  """SIGKILLs the launched processes, then their launchers (a failed test leaves nothing)."""
  for launcher in launchers:
    if launcher.poll() is None:
      for i in (0, 1):
        try:
          os.kill(process_pid(launcher.pid, i), signal.SIGKILL)
        except (AssertionError, OSError):
          pass
      launcher.kill()
      launcher.wait()


def finish(proc, workdir=None):
  try:
    _, err = proc.communicate(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    kill_launches(proc)
    raise
  logs = '\n'.join(open(p).read() for p in sorted(glob.glob(f'{workdir}/logs/*.log'))) if (
      workdir) else ''
  return proc.returncode, err + logs


def process_pid(launcher_pid, process_id):
  """The pid of the launched process with SCORE_SDE_PROCESS_ID == process_id."""
  with open(f'/proc/{launcher_pid}/task/{launcher_pid}/children') as f:
    children = [int(p) for p in f.read().split()]
  for pid in children:
    with open(f'/proc/{pid}/environ', 'rb') as f:
      if f'{parallel.ENV_PROCESS_ID}={process_id}'.encode() in f.read().split(b'\0'):
        return pid
  raise AssertionError(f'no process {process_id} among {children}')


def wait_for(predicate, what, timeout=TIMEOUT, proc=None):
  deadline = time.monotonic() + timeout
  while not predicate():
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f'launch ended before {what}: {proc.communicate()[1][-3000:]}')
    if time.monotonic() > deadline:
      raise AssertionError(f'timed out waiting for {what}')
    time.sleep(0.01)


def losses_by_step(text):
  """{step: loss} from the 'step k/n  loss x' progress lines."""
  out = {}
  for line in text.splitlines():
    parts = line.split()
    if len(parts) > 3 and parts[0] == 'step' and parts[2] == 'loss':
      out[int(parts[1].split('/')[0])] = float(parts[3])
  return out


def restore(workdir, step=None):
  config = tiny_config(1)
  model = models.get_model(config)
  template = train_state.init_train_state(config, model, train_state.get_optimizer(config.optim),
                                       jax.random.PRNGKey(0))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  state, data = ckpt.restore(template, step)
  ckpt.close()
  return state, data


def assert_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5,
                                                       atol=2e-6), a, b)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A: 2 processes, SIGTERM to process 1 only, mid-run. D (alongside): 2 processes, process 1
  SIGKILLed while a checkpoint is being written. R: 1 process x 8 devices, uninterrupted, in this
  process. B: 2 processes resume A. C: 2 processes resume a copy of R's run from an earlier
  checkpoint (1-process checkpoint -> 2 processes)."""
  tmp = tmp_path_factory.mktemp('multihost')
  cache = tmp / 'jax_cache'
  w2, wd, w1, w3 = (str(tmp / n) for n in ('two', 'crash', 'one', 'one_to_two'))
  big = 100000
  # D: the survivor must notice the lost process itself (heartbeat), before any SIGKILL.
  a, d = launch(w2, big, cache), launch(wd, big, cache, grace=60, heartbeat=HEARTBEAT)
  try:
    ckpt_dir = checkpointing.checkpoint_dir(w2)
    wait_for(lambda: any(n.isdigit() for n in os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir)
             else False, 'a checkpoint of A', proc=a)
    os.kill(process_pid(a.pid, 1), signal.SIGTERM)
    crash_dir = checkpointing.checkpoint_dir(wd)
    wait_for(lambda: glob.glob(os.path.join(crash_dir, '*tmp*')), 'a save in D', proc=d)
    os.kill(process_pid(d.pid, 1), signal.SIGKILL)
    t_kill = time.monotonic()
    rc_a, out_a = finish(a, w2)
    rc_d, out_d = finish(d)
    crash_exit_s = time.monotonic() - t_kill
  except BaseException:
    kill_launches(a, d)
    raise
  assert rc_a == 0, out_a[-3000:]
  stopped = checkpointing.Checkpointer(ckpt_dir, read_only=True).latest_step()
  at_stop = restore(w2, stopped)      # before B's checkpoints prune it
  n_iters = max(stopped + 4, 12)

  with contextlib.redirect_stdout(io.StringIO()) as out_r:
    reference = training.train_and_evaluate(tiny_config(n_iters, **SAMPLE, **EVAL), w1)
  steps_one = checkpointing.Checkpointer(checkpointing.checkpoint_dir(w1),
                                         read_only=True).all_steps()
  earlier = max(s for s in steps_one if s < n_iters)
  shutil.copytree(w1, w3, ignore=shutil.ignore_patterns(*[str(s) for s in steps_one
                                                          if s != earlier]))
  b, c = launch(w2, n_iters, cache, **SAMPLE), launch(w3, n_iters, cache, **EVAL)
  try:
    rc_b, out_b = finish(b, w2)
    rc_c, out_c = finish(c, w3)
  except BaseException:
    kill_launches(b, c)
    raise
  assert rc_b == 0, out_b[-3000:]
  assert rc_c == 0, out_c[-3000:]
  return dict(w1=w1, w2=w2, w3=w3, wd=wd, stopped=stopped, at_stop=at_stop, n_iters=n_iters,
              reference=reference, out_r=out_r.getvalue(), out_a=out_a, out_b=out_b, rc_d=rc_d, out_d=out_d,
              crash_exit_s=crash_exit_s)


def test_sigterm_to_one_host_stops_all_at_one_checkpoint(runs):
  stopped = runs['stopped']
  assert 4 <= stopped < 100000
  logs = runs['out_a']
  # Process 0 (which writes the log) did not get the signal: process 1's flag reached it.
  assert f'Another host received a stop signal: saved step {stopped}; stopping.' in logs
  # The same step on both hosts: one checkpoint, complete, with the data position of that step.
  state, data = runs['at_stop']
  assert int(state.step) == stopped and data['train']['step'] == stopped


def test_two_processes_match_one_process_and_resume_from_sigterm(runs):
  """Kill-and-resume on 2 processes = uninterrupted 1 process x 8 devices: loss curve, final
  parameters (float tolerance: the all-reduce runs in another order), and the samples."""
  n = runs['n_iters']
  final_two, _ = restore(runs['w2'])            # written by 2 processes, read by 1
  assert int(final_two.step) == n
  assert_close(final_two, runs['reference'])
  two = {**losses_by_step(runs['out_a']), **losses_by_step(runs['out_b'])}
  one = losses_by_step(runs['out_r'])
  assert len(two) >= 3 and max(two) == n and set(two) <= set(one)
  for step, loss in two.items():
    assert loss == pytest.approx(one[step], abs=2e-5)
  s2 = np.load(os.path.join(runs['w2'], 'samples', f'step_{n}.npz'))['samples']
  s1 = np.load(os.path.join(runs['w1'], 'samples', f'step_{n}.npz'))['samples']
  assert s2.shape == (64, 2) and len(np.unique(s2, axis=0)) == 64    # no host drew twice
  np.testing.assert_allclose(s2, s1, rtol=1e-3, atol=1e-3)


def test_one_process_checkpoint_resumes_on_two(runs):
  final, _ = restore(runs['w3'])
  assert int(final.step) == runs['n_iters']
  assert_close(final, runs['reference'])


def test_only_process_zero_writes_logs_and_pictures(runs):
  for w in (runs['w2'], runs['w3']):
    assert losses_by_step(open(os.path.join(w, 'logs', 'process_0.log')).read())
    assert not losses_by_step(open(os.path.join(w, 'logs', 'process_1.log')).read())
    assert 'Wrote' not in open(os.path.join(w, 'logs', 'process_1.log')).read()
  assert len(glob.glob(os.path.join(runs['w3'], 'tensorboard', '*'))) == 2   # R's and C's


def test_crash_of_one_host_is_reported_and_leaves_no_complete_looking_checkpoint(runs):
  """Process 1 SIGKILLed mid-save: the launcher names it and how it ended; the survivor, stuck
  waiting for it, notices within the heartbeat timeout and says so in one line naming the last
  complete checkpoint, with the status that means 'rerun to resume'."""
  assert runs['rc_d'] == 128 + signal.SIGKILL
  assert re.fullmatch(r'Error: process 1 of 2 \(pid \d+\) was killed by SIGKILL; stopping the '
                      r'others\.\n', runs['out_d']), runs['out_d']
  assert runs['crash_exit_s'] < HEARTBEAT + 30, 'the surviving process must not hang'
  with open(os.path.join(runs['wd'], 'logs', 'process_0.log')) as f:
    survivor = f.read()
  errors = [line for line in survivor.splitlines() if line.startswith('Error')]
  assert len(errors) == 1 and 'Traceback' not in survivor, survivor[-3000:]
  assert errors[0].startswith(f'Error: lost process 1 of 2 (no heartbeat for ')
  ckpt_dir = checkpointing.checkpoint_dir(runs['wd'])
  steps = checkpointing.complete_steps(ckpt_dir)
  assert (f'The last complete checkpoint is step {steps[-1]} in {ckpt_dir}' if steps else
          f'There is no complete checkpoint in {ckpt_dir}') in errors[0], errors[0]
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(runs['wd']), read_only=True)
  for step in ckpt.all_steps():      # every checkpoint orbax lists is complete and readable
    state, data = restore(runs['wd'], step)
    assert int(state.step) == step == data['train']['step']


# ---------------------------------------------------------------------------------------------
# In-process checks: bad input, host sharding of the data, the jitted steps.


def test_batch_not_divisible_by_hosts_times_devices(monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  assert parallel.per_device_batch_size(64, 4) == 8
  with pytest.raises(ConfigError, match=r'36 is not divisible .* \(8 = 2 hosts x 4 local'):
    parallel.per_device_batch_size(36, 4)


def test_unreachable_coordinator_fails_fast_with_a_message(monkeypatch):
  import socket
  with socket.socket() as s:        # a port nobody listens on
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  monkeypatch.setenv(parallel.ENV_COORDINATOR, f'localhost:{port}')
  monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, '2')
  monkeypatch.setenv(parallel.ENV_PROCESS_ID, '1')
  t0 = time.monotonic()
  with pytest.raises(parallel.DistributedError, match=f'Cannot reach the coordinator at '
                     f'localhost:{port}'):
    parallel.initialize_distributed(False, timeout=1)
  assert time.monotonic() - t0 < 10
  monkeypatch.setenv(parallel.ENV_PROCESS_ID, '2')
  with pytest.raises(ConfigError, match='not in'):
    parallel.initialize_distributed(False, timeout=1)


def test_mismatched_configs_between_processes_are_rejected(monkeypatch):
  """Process 1 started with another learning rate: its config hash differs from process 0's.
  (The gather across processes is faked here; the launches above run the real one.)"""
  from jax.experimental import multihost_utils
  texts = [tiny_config(12).to_json_best_effort(sort_keys=True)]
  other = tiny_config(12)
  other.optim.lr = 1e-3
  texts.append(other.to_json_best_effort(sort_keys=True))
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  digests = []
  monkeypatch.setattr(multihost_utils, 'process_allgather', lambda x: np.stack(digests))
  digests.extend(parallel.digest(t) for t in texts)     # what each process contributes
  with pytest.raises(ConfigError, match=r'Processes \[1\] run a different config from process 0'):
    parallel.check_same_on_all_processes(texts[0], 'config')
  digests[1] = digests[0]
  parallel.check_same_on_all_processes(texts[0], 'config')


def _as_host(monkeypatch, index, count=2):
  monkeypatch.setattr(jax, 'process_index', lambda: index)
  monkeypatch.setattr(jax, 'process_count', lambda: count)


def test_each_host_reads_a_disjoint_share_of_the_images(monkeypatch):
  """Image pipeline, training order (shuffled, endless): one epoch on 2 hosts covers every
  example of the (even) split once; ids are encoded in the pixel values."""
  n, host_batch = 40, 4
  source = [{'image': np.full((1, 1, 1), i, np.uint8)} for i in range(n)]
  opts = pipeline.PipelineOptions(
      global_batch_size=2 * host_batch, num_local_devices=2, image_shape=(1, 1, 1), seed=0,
      shuffle=True, num_epochs=None, random_flip=False, uniform_dequantization=False,
      scaler=lambda x: x, num_workers=0, prefetch=0)
  seen = []
  for host in (0, 1):
    with monkeypatch.context() as m:
      _as_host(m, host)
      it = pipeline.build(source, lambda ex: ex, opts)
      for _ in range(n // 2 // host_batch):
        seen.append(np.rint(next(it)['image'].reshape(-1) * 255).astype(int))
  seen = np.concatenate(seen)
  assert sorted(seen) == list(range(n))


def test_each_host_reads_a_disjoint_share_of_the_toy_batches(monkeypatch):
  full = next(datasets.ToyIterator('spiral', 64, seed=3, num_local_devices=4))['image']
  halves = []
  for host in (0, 1):
    with monkeypatch.context() as m:
      _as_host(m, host)
      halves.append(next(datasets.ToyIterator('spiral', 64, seed=3,
                                              num_local_devices=2))['image'].reshape(-1, 2))
  both = np.concatenate(halves)
  np.testing.assert_array_equal(both, full.reshape(-1, 2))     # host order = global order
  assert len(np.unique(both, axis=0)) == 64


@pytest.fixture(scope='module')
def step_setup():
  config = tiny_config(12)
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  optimizer = train_state.get_optimizer(config.optim)
  state = train_state.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))
  step_fn, _ = losses.get_step_fns(config, sde, model, optimizer)
  xs = jax.random.normal(jax.random.PRNGKey(1), (3, 64, 2))
  return state, step_fn, xs, jax.random.PRNGKey(2)


def test_data_parallel_step_equals_single_device_step_and_n_jitted_steps(step_setup):
  """A step on 8 devices = the step on 1 device (pmap semantics); 3 steps in one device call
  (lax.scan) = 3 calls. (Only one step is compared across device counts: from the second on,
  Adam turns the all-reduce's rounding in near-zero gradients into full-size updates.)"""
  state, step_fn, xs, rng = step_setup
  mesh = parallel.make_mesh()
  expected, expected_metrics = jax.jit(step_fn)(state, {'image': xs[0]}, rng)
  one = parallel.data_parallel_step(step_fn, mesh)
  three = parallel.data_parallel_step(step_fn, mesh, n_steps=3)
  p_state = parallel.replicate_global(state, mesh)
  for i, x in enumerate(xs):
    p_state, metrics = one(p_state, parallel.put_batch({'image': parallel.shard(x, 8)}, mesh), rng)
    if i == 0:
      np.testing.assert_allclose(float(metrics['loss']), float(expected_metrics['loss']),
                                 rtol=1e-6)
      assert_close(parallel.to_local(p_state), expected)
  stacked = parallel.put_batch({'image': xs.reshape(3, 8, 8, 2)}, mesh, stacked=True)
  chunk_state, chunk_metrics = three(parallel.replicate_global(state, mesh), stacked, rng)
  assert int(p_state.step) == int(chunk_state.step) == 3
  assert_close(parallel.to_local(chunk_state), parallel.to_local(p_state))
  assert float(chunk_metrics['loss']) == pytest.approx(float(metrics['loss']), rel=1e-6)


@pytest.mark.parametrize('start, stop, n, expected', [
    (0, 12, 4, [4, 4, 4]), (0, 10, 4, [4, 4, 1, 1]), (6, 12, 4, [1, 1, 4]), (3, 3, 4, [])])
def test_chunk_sizes(start, stop, n, expected):
  assert training.chunk_sizes(start, stop, n) == expected


def test_n_jitted_steps_must_divide_the_event_frequencies():
  config = tiny_config(12)
  config.training.n_jitted_steps = 3
  with pytest.raises(ConfigError, match='n_jitted_steps=3 must divide'):
    training.step_chunks(config.training)
