"""The training loop: build everything from the config, step on all devices, log, checkpoint.

``train_and_evaluate(config, workdir)`` is the whole job behind ``train.py``. It resumes from the
latest complete checkpoint in ``<workdir>/checkpoints`` (same step, optimizer state, EMA and data
position), saves on SIGTERM / Ctrl-C, and stops on a non-finite loss without overwriting the
last good checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from score_sde import checkpointing, config_checks, datasets, errors, generation, losses, models
from score_sde import parallel, plotting, sde_lib
from score_sde.errors import ConfigError
from score_sde.models import utils as mutils


class NonFiniteLossError(errors.ScoreSDEError, FloatingPointError):
  """The training loss or the parameters became NaN or infinite."""


def _adam(optim, schedule):
  return optax.adamw(learning_rate=schedule, b1=optim.beta1, eps=optim.eps,
                     weight_decay=optim.weight_decay)


OPTIMIZERS = {'Adam': _adam}


def get_optimizer(optim) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam(W) with the paper's linear warm-up: lr min(step/warmup, 1)."""
  if optim.optimizer not in OPTIMIZERS:
    raise ConfigError(f'Unknown optimizer {optim.optimizer!r}; valid: {sorted(OPTIMIZERS)}.')
  schedule = (optax.linear_schedule(0.0, optim.lr, optim.warmup) if optim.warmup > 0
              else optax.constant_schedule(optim.lr))
  chain = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
  return optax.chain(*chain, OPTIMIZERS[optim.optimizer](optim, schedule))


def init_train_state(config, model, optimizer, rng) -> losses.TrainState:
  params = mutils.init_params(rng, model, generation.sample_shape(config))
  return losses.TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                           opt_state=optimizer.init(params))


def get_step_fns(config, sde, model, optimizer):
  """(train_step, eval_step), both ``(state, batch, rng, axis_name=None)``."""
  kwargs = dict(ema_rate=config.model.ema_rate, continuous=config.training.continuous,
                reduce_mean=config.training.reduce_mean,
                likelihood_weighting=config.training.likelihood_weighting,
                label_dropout=config.training.get('label_dropout', 0.0),
                objective=config.training.get('objective', None))
  return (losses.get_step_fn(sde, model, optimizer, train=True, **kwargs),
          losses.get_step_fn(sde, model, optimizer, train=False, **kwargs))


def step_chunks(tc) -> int:
  """``training.n_jitted_steps``, checked: every logging / eval / snapshot step must end a chunk."""
  n = tc.get('n_jitted_steps', 1)
  freqs = {k: tc[k] for k in ('log_freq', 'eval_freq', 'snapshot_freq',
                              'snapshot_freq_for_preemption')}
  if not isinstance(n, int) or n < 1:
    raise ConfigError(f'training.n_jitted_steps must be a positive integer, not {n!r}.')
  bad = {k: v for k, v in freqs.items() if v % n}
  if bad:
    raise ConfigError(f'training.n_jitted_steps={n} must divide {bad}: logging, evaluation and '
                      f'checkpoints happen between device calls of n_jitted_steps steps.')
  return n


def chunk_sizes(start: int, stop: int, n: int) -> list[int]:
  """Steps per device call from ``start`` to ``stop``: chunks of ``n`` between multiples of
  ``n``, single steps before the first multiple (a resume at another n) and after the last."""
  first = min(-(-start // n) * n, stop)
  last = max(first, stop // n * n)
  return [1] * (first - start) + [n] * ((last - first) // n) + [1] * (stop - last)


def _metrics_only(step_fn):
  """An evaluation step that returns no state (nothing to copy out of the devices)."""
  def step(state, batch, rng, axis_name=None):
    return (), step_fn(state, batch, rng, axis_name=axis_name)[1]
  return step


@dataclasses.dataclass
class _Stop:
  """Set by SIGTERM / SIGINT; the loop checks it between steps."""
  signal: int | None = None

  def __call__(self, signum, frame):
    self.signal = signum


def _install_signal_handlers(stop: _Stop):
  previous = {}
  for sig in (signal.SIGTERM, signal.SIGINT):
    try:
      previous[sig] = signal.signal(sig, stop)
    except ValueError:  # not the main thread: leave signals alone
      pass
  return previous


def _report(message: str, bar: tqdm.tqdm | None = None) -> None:
  """Progress for people: above the progress bar on a terminal, a plain line in a log."""
  if jax.process_index() != 0:
    return
  if bar is not None and not bar.disable:
    bar.write(message)
  else:
    print(message, flush=True)


def _format_eta(seconds: float) -> str:
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


class _Writer:
  """TensorBoard scalars (tensorboardX event files) on the first host only."""

  def __init__(self, logdir: str):
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter
      self._writer = SummaryWriter(logdir)

  def scalars(self, step: int, values: dict[str, float]):
    if self._writer is not None:
      for k, v in values.items():
        self._writer.add_scalar(k, v, step)
      self._writer.flush()

  def close(self):
    if self._writer is not None:
      self._writer.close()


def save_samples_picture(config, samples: np.ndarray, path: str, data: np.ndarray | None = None,
                         title: str = '') -> str:
  """2-D data: a scatter plot over the data; images: a grid in [0, 1]."""
  if config.data.image_size is None:
    return plotting.scatter_2d(samples, path, data=data, title=title)
  images = datasets.get_data_inverse_scaler(config)(samples)
  return plotting.image_grid(images[:64], path)


@jax.jit
def _all_finite(tree) -> jax.Array:
  """Whether every entry of every leaf is finite: one program, not one eager op per leaf shape."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_and_evaluate(config, workdir: str, devices: Sequence | None = None) -> losses.TrainState:
  """Trains ``config`` in ``workdir`` up to ``config.training.n_iters`` steps; returns the state."""
  parallel.initialize_distributed(config.training.distributed)
  parallel.check_same_on_all_processes(config.to_json_best_effort(sort_keys=True), 'config')
  devices = list(devices or jax.local_devices())
  n_dev = len(devices)
  mesh = parallel.make_mesh(devices if jax.process_count() == 1 else None)
  # Everything that can fail on bad input is checked before any work is done.
  config_checks.check(config, 'train', n_dev)
  checkpointing.check_run_config(config, workdir)   # another run's workdir: stop, touch nothing
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  optimizer = get_optimizer(config.optim)
  train_iter = datasets.get_dataset(config, 'train', num_local_devices=n_dev)
  eval_iter = datasets.get_dataset(config, 'test', num_local_devices=n_dev)
  train_step, eval_step = get_step_fns(config, sde, model, optimizer)
  tc = config.training
  chunks = step_chunks(tc)
  p_train_steps = {n: parallel.data_parallel_step(train_step, mesh, n_steps=n) for n in {1, chunks}}
  p_eval_step = parallel.data_parallel_step(_metrics_only(eval_step), mesh, donate=False)
  sample_fn = None
  if tc.snapshot_sampling:
    per_device = parallel.per_device_batch_size(config.sampling.batch_size, n_dev)
    sample_fn = generation.get_sample_fn(config, sde, model, per_device, devices)

  rng = jax.random.PRNGKey(config.seed)
  init_rng, train_rng, eval_rng, sample_rng = jax.random.split(rng, 4)
  # The state lives replicated on every device of every host; orbax restores into that layout.
  # One compiled call (not one per initializer op), written straight into the replicated layout.
  p_state = parallel.replicated_call(
      lambda rng: init_train_state(config, model, optimizer, rng), mesh)(init_rng)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                    keep_period=tc.snapshot_freq)
  has_checkpoint = ckpt.latest_step() is not None
  if has_checkpoint:
    p_state, data_state = ckpt.restore(p_state, config=config)
    if 'train' in data_state:
      train_iter.set_state(data_state['train'])
    if 'eval' in data_state:
      eval_iter.set_state(data_state['eval'])
    _report(f'Resumed from step {int(p_state.step)} in {ckpt.directory}.')
  start_step = int(p_state.step)
  if jax.process_index() == 0:   # the run has started: record its config
    checkpointing.write_config_json(config, workdir, has_checkpoint)
  if jax.process_count() > 1:
    _report(f'{jax.process_count()} processes x {n_dev} devices = {jax.device_count()} devices; '
            f'{tc.batch_size // jax.process_count()} examples per host per step.')
  sizes = chunk_sizes(start_step, tc.n_iters, chunks)
  train_batches = parallel.Prefetcher(train_iter, mesh, sizes)
  agreed_stop = parallel.AgreedFlag()
  writer = _Writer(os.path.join(workdir, 'tensorboard'))
  stop = _Stop()
  previous_handlers = _install_signal_handlers(stop)
  finite = jnp.array(True)
  last_saved = start_step if has_checkpoint else None

  def non_finite(what):
    kept = (f'the last good checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is kept'
            if ckpt.latest_step() is not None else 'no checkpoint was written')
    return NonFiniteLossError(
        f'{what}; training stopped and {kept}. Lower optim.lr, raise optim.warmup or lower '
        f'optim.grad_clip.')

  def save(step):
    nonlocal last_saved
    if not bool(finite):
      raise non_finite(f'Loss became NaN/inf before step {step}')
    if not bool(_all_finite((p_state.params, p_state.ema_params))):
      raise non_finite(f'Parameters became NaN/inf before step {step}')
    ckpt.save(step, p_state, {'train': train_batches.get_state(), 'eval': eval_iter.get_state()},
              config=config)
    last_saved = step

  bar = tqdm.tqdm(total=tc.n_iters, initial=start_step, disable=not sys.stderr.isatty(),
                  dynamic_ncols=True, desc='train')
  t0, s0 = time.time(), start_step
  try:
    step = start_step
    for n in sizes:
      # Batches arrive on the devices ahead of time (Prefetcher); nothing here waits for the
      # devices except logging, so the host runs ahead and the devices never idle.
      p_state, metrics = p_train_steps[n](p_state, next(train_batches), train_rng)
      step += n
      finite = finite & jnp.all(jnp.isfinite(metrics['loss']))
      bar.update(n)
      if step % tc.log_freq == 0 or step == tc.n_iters:
        loss = float(metrics['loss'])
        if not np.isfinite(loss):
          raise non_finite(f'Loss is {loss} at step {step}')
        rate = (step - s0) / max(time.time() - t0, 1e-9)
        eta = _format_eta((tc.n_iters - step) / max(rate, 1e-9))
        bar.set_postfix(loss=f'{loss:.4f}', refresh=False)
        _report(f'step {step}/{tc.n_iters}  loss {loss:.5f}  {rate:.1f} steps/s  ETA {eta}', bar)
        writer.scalars(step, {'train/loss': loss, 'train/grad_norm': float(metrics['grad_norm']),
                              'train/steps_per_sec': rate})
      if step % tc.eval_freq == 0:
        _, eval_metrics = p_eval_step(p_state, parallel.put_batch(next(eval_iter), mesh), eval_rng)
        writer.scalars(step, {'eval/loss': float(eval_metrics['loss'])})
      if (step % tc.snapshot_freq_for_preemption == 0 or step % tc.snapshot_freq == 0
          or step == tc.n_iters):
        save(step)
      if sample_fn is not None and (step % tc.snapshot_freq == 0 or step == tc.n_iters):
        _snapshot_samples(config, sample_fn, p_state, devices, sample_rng, step, workdir)
      if agreed_stop.update(stop.signal is not None):   # all hosts stop at the same step
        if last_saved != step:   # the signal may have landed during this step's own save
          save(step)
        who = (f'{signal.Signals(stop.signal).name} received' if stop.signal
               else 'Another host received a stop signal')
        _report(f'{who}: saved step {step}; stopping.', bar)
        break
  finally:
    train_batches.close()
    bar.close()
    ckpt.close()
    writer.close()
    for sig, handler in previous_handlers.items():
      signal.signal(sig, handler)
  return parallel.to_local(p_state)


def _snapshot_samples(config, sample_fn, p_state, devices, rng, step, workdir):
  """Samples ``sampling.batch_size`` examples with the EMA parameters; host 0 writes them."""
  n = config.sampling.batch_size
  params = parallel.replicate(parallel.to_local(p_state.ema_params), devices)
  samples, nfe = generation.draw_samples(sample_fn, params, jax.random.fold_in(rng, step), n, n)
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, 'samples', f'step_{step}.png')
  save_samples_picture(config, samples, path, title=f'step {step} (EMA, {nfe} NFE)')
  np.savez_compressed(os.path.join(workdir, 'samples', f'step_{step}.npz'), samples=samples)
  _report(f'Wrote {path}')
