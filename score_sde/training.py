"""The training loop, for every trainable thing: step on all devices, log, checkpoint, signals.

``run(job, mesh)`` trains a ``Job`` (its initial state, pure train / eval steps, data, schedule
and checkpoint folder). It resumes from the latest complete checkpoint (same step, optimizer
state, EMA and data position), saves on SIGTERM / Ctrl-C, and stops on a non-finite loss without
overwriting the last good checkpoint. ``train_and_evaluate(config, workdir)`` is the score model's
job behind ``train.py``; ``classifier_training`` builds the classifier's job on the same loop.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from score_sde import checkpointing, config_checks, datasets, errors, generation, losses, models
from score_sde import parallel, plotting, progress, reporting, sde_lib, stop_signals
from score_sde import teacher, train_state
from score_sde.checkpointing import identity, posthoc
from score_sde.evaluation import loss_by_sigma
from score_sde.errors import ConfigError


class NonFiniteLossError(errors.ScoreSDEError, FloatingPointError):
  """The training loss or the parameters became NaN or infinite."""


def step_chunks(tc) -> int:
  """``training.n_jitted_steps``, checked: every logging / eval / snapshot step must end a chunk."""
  n = tc.get('n_jitted_steps', 1)
  freqs = {k: tc[k] for k in ('log_freq', 'eval_freq', 'snapshot_freq',
                              'snapshot_freq_for_preemption')}
  if tc.get('posthoc_ema_sigma_rels'):
    freqs['posthoc_ema_snapshot_freq'] = tc.posthoc_ema_snapshot_freq
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


class _Writer:
  """TensorBoard scalars (tensorboardX event files) on the first host only."""

  def __init__(self, logdir: str):
    self._writer = None
    if parallel.is_main_process():
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


@jax.jit
def _all_finite(tree) -> jax.Array:
  """Whether every entry of every leaf is finite: one program, not one eager op per leaf shape."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass
class Schedule:
  """When the loop logs, evaluates and saves (steps). The latest checkpoint is kept, plus every
  ``snapshot_freq``-th with ``keep_snapshots``."""
  n_iters: int
  log_freq: int
  eval_freq: int
  snapshot_freq: int
  snapshot_freq_for_preemption: int
  n_jitted_steps: int = 1
  keep_snapshots: bool = True


@dataclasses.dataclass
class Job:
  """One trainable thing for ``run``: ``init_state(rng) -> TrainState``, pure steps
  ``(state, batch, rng, axis_name=None) -> (state, metrics)`` (``metrics['loss']`` at least),
  host iterators with ``get_state`` / ``set_state``, keys (init, train, eval), the global
  ``batch_size`` and where its checkpoints go. ``config`` is
  stored with each checkpoint (the run's identity); ``on_snapshot(state, step)`` runs at
  ``snapshot_freq`` (e.g. sample pictures). ``power_ema_snapshots``: a
  ``checkpointing.posthoc.SnapshotWriter`` saving the state's power EMAs (post-hoc EMA) every
  ``its every`` steps, at every kept checkpoint and at the end. ``on_eval(state, step) ->
  {name: float}`` adds TensorBoard scalars at ``eval_freq`` (e.g. the loss by noise level)."""
  name: str
  init_state: Callable[[Any], train_state.TrainState]
  train_step: Callable
  train_iter: Iterator
  schedule: Schedule
  checkpoint_dir: str
  rng: Any
  eval_step: Callable | None = None
  eval_iter: Iterator | None = None
  config: Any = None
  tensorboard_dir: str | None = None
  on_snapshot: Callable | None = None
  on_eval: Callable | None = None
  log_metrics: tuple[str, ...] = ('loss',)
  batch_size: int = 0
  batch_key: str = 'training.batch_size'      # named when the step does not fit the memory
  memory_options: str = ''                    # ... with these other ways to reduce it
  power_ema_snapshots: Any = None


def train_and_evaluate(config, workdir: str,
                       devices: Sequence | None = None) -> train_state.TrainState:
  """Trains ``config`` in ``workdir`` up to ``config.training.n_iters`` steps; returns the state."""
  parallel.initialize_distributed(config.training.distributed)
  parallel.check_same_on_all_processes(config.to_json_best_effort(sort_keys=True), 'config')
  devices = list(devices or jax.local_devices())
  n_dev = len(devices)
  mesh = parallel.make_mesh(devices if jax.process_count() == 1 else None)
  # Everything that can fail on bad input is checked before any work is done.
  config_checks.check(config, 'train', n_dev)
  checkpointing.check_run_config(config, workdir)   # another run's workdir: stop, touch nothing
  distilled = config.training.get('objective') == 'cd'
  if distilled:
    teacher.check(config)
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  optimizer = train_state.get_optimizer(config.optim, config.training.n_iters)
  train_iter = datasets.get_dataset(config, 'train', num_local_devices=n_dev)
  eval_iter = datasets.get_dataset(config, 'test', num_local_devices=n_dev)
  teacher_score_fn, init_state = None, functools.partial(train_state.init_train_state, config,
                                                         model, optimizer)
  if distilled:
    teacher_score_fn, teacher_params = teacher.load(config)
    if config.training.get('teacher_init'):
      init_state = lambda rng: train_state.new_state(
          teacher_params, optimizer, len(train_state.posthoc_gammas(config)))
  train_step, eval_step = losses.get_step_fns(config, sde, model, optimizer, teacher_score_fn)
  tc = config.training
  schedule = Schedule(tc.n_iters, tc.log_freq, tc.eval_freq, tc.snapshot_freq,
                      tc.snapshot_freq_for_preemption, step_chunks(tc))
  rng = jax.random.PRNGKey(config.seed)
  init_rng, train_rng, eval_rng, sample_rng = jax.random.split(rng, 4)
  on_snapshot = None
  if tc.snapshot_sampling:
    sample_fn = generation.get_sample_fn(config, sde, model, devices)
    on_snapshot = functools.partial(_snapshot_samples, config, sample_fn, rng=sample_rng,
                                    workdir=workdir)
  snapshots = None
  if tc.get('posthoc_ema_sigma_rels'):
    snapshots = posthoc.SnapshotWriter(workdir, tc.posthoc_ema_sigma_rels,
                                       tc.posthoc_ema_snapshot_freq)
  on_eval = None
  if config.eval.loss_by_sigma:
    evaluate_sigma = loss_by_sigma.for_config(config, sde, model)

    def on_eval(state, step):
      return loss_by_sigma.scalars(evaluate_sigma(parallel.to_local(state.ema_params),
                                                  jax.random.fold_in(eval_rng, step)))
  job = Job('train', init_state,
            train_step, train_iter, schedule, checkpointing.checkpoint_dir(workdir),
            rng=(init_rng, train_rng, eval_rng), eval_step=eval_step, eval_iter=eval_iter,
            config=config,
            tensorboard_dir=os.path.join(workdir, 'tensorboard'), on_snapshot=on_snapshot,
            on_eval=on_eval, log_metrics=('loss', 'grad_norm'), batch_size=tc.batch_size,
            memory_options=_memory_options(config.model),
            power_ema_snapshots=snapshots)
  return run(job, mesh, workdir)


def _memory_options(model) -> str:
  """'set model.remat=True or model.dtype='bfloat16'': what is not yet on."""
  options = ([] if model.get('remat') else ['model.remat=True'])
  options += [] if model.get('dtype', 'float32') == 'bfloat16' else ["model.dtype='bfloat16'"]
  return f'set {" or ".join(options)}' if options else ''


def run(job: Job, mesh, workdir: str | None = None) -> train_state.TrainState:
  """Trains ``job`` on every device of ``mesh`` up to ``job.schedule.n_iters`` steps; returns
  this host's copy of the final state. ``workdir``: where ``config.json`` records the run."""
  sc = job.schedule
  init_rng, train_rng, eval_rng = job.rng
  p_train_steps = {n: parallel.data_parallel_step(job.train_step, mesh, n_steps=n)
                   for n in {1, sc.n_jitted_steps}}
  p_eval_step = None
  if job.eval_step is not None:
    p_eval_step = parallel.data_parallel_step(losses.metrics_only(job.eval_step), mesh,
                                              donate=False)
  # The state lives replicated on every device of every host; orbax restores into that layout.
  # One compiled call (not one per initializer op), written straight into the replicated layout.
  p_state = parallel.replicated_call(job.init_state, mesh)(init_rng)
  ckpt = checkpointing.Checkpointer(job.checkpoint_dir,
                                    keep_period=sc.snapshot_freq if sc.keep_snapshots else None)
  has_checkpoint = ckpt.latest_step() is not None
  parallel.set_lost_process_note(lambda: checkpointing.resume_note(ckpt.directory))
  if has_checkpoint:
    p_state, data_state = ckpt.restore(p_state, config=job.config)
    if 'train' in data_state:
      job.train_iter.set_state(data_state['train'])
    if 'eval' in data_state and job.eval_iter is not None:
      job.eval_iter.set_state(data_state['eval'])
    reporting.say(f'Resumed from step {int(p_state.step)} in {ckpt.directory}.')
  start_step = int(p_state.step)
  previous_handlers = stop_signals.install()
  if bool(parallel.any_process(stop_signals.received() is not None)):   # during start-up
    ckpt.close()
    stop_signals.restore(previous_handlers)
    reporting.say(f'{_stop_reason()} during start-up: stopping before the first step (nothing '
                  'to save).')
    parallel.finish_heartbeat()
    return parallel.to_local(p_state)
  if parallel.is_main_process() and job.config is not None and workdir is not None:
    identity.write_config_json(job.config, workdir, has_checkpoint)   # the run has started
  if job.config is not None:
    reporting.say(reporting.banner(job.name, job.config, parallel.to_local(p_state.params),
                                   getattr(job.train_iter, 'num_examples', None)))
  if jax.process_count() > 1:
    reporting.say(f'{jax.process_count()} processes x {len(mesh.local_devices)} devices = '
                  f'{jax.device_count()} devices; {job.batch_size // jax.process_count()} examples '
                  'per host per step.')
  sizes = chunk_sizes(start_step, sc.n_iters, sc.n_jitted_steps)
  train_batches = parallel.Prefetcher(job.train_iter, mesh, sizes)
  agreed_stop = parallel.AgreedFlag()
  writer = _Writer(job.tensorboard_dir) if job.tensorboard_dir else None
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
    data = {'train': train_batches.get_state()}
    if job.eval_iter is not None:
      data['eval'] = job.eval_iter.get_state()
    ckpt.save(step, p_state, data, config=job.config)
    last_saved = step

  bar = tqdm.tqdm(total=sc.n_iters, initial=start_step, disable=not progress.on_terminal(),
                  dynamic_ncols=True, desc=job.name)
  # Without a terminal the bar is off: a line every progress.line_interval() seconds as well.
  t0, s0, last_line, interval = time.time(), start_step, time.time(), progress.line_interval()
  memory = (f'The {job.name} step',
            f'{job.batch_key}={job.batch_size}, {job.batch_size // mesh.size} per device',
            f'Lower {job.batch_key}' + (f', or {job.memory_options}' if job.memory_options else '')
            + '.')
  try:
    step, checked = start_step, set()
    for n in sizes:
      batch = next(train_batches)
      if n not in checked:   # compiled now: does it fit the device memory?
        parallel.check_memory(p_train_steps[n].compile(p_state, batch, train_rng), *memory)
        checked.add(n)
      # Batches arrive on the devices ahead of time (Prefetcher); nothing here waits for the
      # devices except logging, so the host runs ahead and the devices never idle.
      p_state, metrics = p_train_steps[n](p_state, batch, train_rng)
      step += n
      finite = finite & jnp.all(jnp.isfinite(metrics['loss']))
      bar.update(n)
      logged = step % sc.log_freq == 0 or step == sc.n_iters
      if logged or (bar.disable and time.time() - last_line >= interval):
        values = {k: float(metrics[k]) for k in job.log_metrics}
        if logged and not np.isfinite(values['loss']):   # every host decides alike
          raise non_finite(f'Loss is {values["loss"]} at step {step}')
        rate = (step - s0) / max(time.time() - t0, 1e-9)
        eta = reporting.format_eta((sc.n_iters - step) / max(rate, 1e-9))
        bar.set_postfix(loss=f'{values["loss"]:.4f}', refresh=False)
        shown = '  '.join(f'{k} {v:.5f}' for k, v in values.items() if k != 'grad_norm')
        prefix = '' if job.name == 'train' else f'{job.name} '
        reporting.say(f'{prefix}step {step}/{sc.n_iters}  {shown}  {rate:.1f} steps/s  '
                      f'ETA {eta}', bar)
        last_line = time.time()
        if writer is not None and logged:
          writer.scalars(step, {**{f'train/{k}': v for k, v in values.items()},
                                'train/steps_per_sec': rate})
      if p_eval_step is not None and step % sc.eval_freq == 0:
        _, eval_metrics = p_eval_step(p_state, parallel.put_batch(next(job.eval_iter), mesh),
                                      eval_rng)
        if writer is not None:
          writer.scalars(step, {'eval/loss': float(eval_metrics['loss'])})
      if job.on_eval is not None and step % sc.eval_freq == 0:
        scalars = job.on_eval(p_state, step)
        if writer is not None:
          writer.scalars(step, scalars)
      if (step % sc.snapshot_freq_for_preemption == 0 or step % sc.snapshot_freq == 0
          or step == sc.n_iters):
        save(step)
      snapshots = job.power_ema_snapshots
      if snapshots is not None and (step % snapshots.every == 0 or step % sc.snapshot_freq == 0
                                    or step == sc.n_iters):
        snapshots.save(step, p_state.power_ema_params)
      if job.on_snapshot is not None and (step % sc.snapshot_freq == 0 or step == sc.n_iters):
        job.on_snapshot(p_state, step)
      if agreed_stop.update(stop_signals.received() is not None):   # all hosts stop together
        if last_saved != step:   # the signal may have landed during this step's own save
          save(step)
        reporting.say(f'{_stop_reason()}: saved step {step}; stopping.', bar)
        break
  except errors.ScoreSDEError:
    raise
  except Exception as e:
    too_big = parallel.out_of_memory(e, *memory)
    if too_big is not None:
      raise too_big from e
    raise
  finally:
    train_batches.close()
    bar.close()
    ckpt.close()
    if job.power_ema_snapshots is not None:
      job.power_ema_snapshots.close()
    if writer is not None:
      writer.close()
    stop_signals.restore(previous_handlers)
    stop_signals.clear()   # a signal after the last step's check: the job is over anyway
  parallel.finish_heartbeat()
  return parallel.to_local(p_state)


def _stop_reason() -> str:
  """'SIGTERM received' (this host), or that another host was signalled; clears the signal."""
  sig = stop_signals.received()
  stop_signals.clear()
  return f'{signal.Signals(sig).name} received' if sig else 'Another host received a stop signal'


def _snapshot_samples(config, sample_fn, p_state, step, *, rng, workdir):
  """Samples ``sampling.batch_size`` examples with the EMA parameters; host 0 writes them."""
  samples, _, nfe = generation.draw(sample_fn, parallel.to_local(p_state.ema_params),
                                    jax.random.fold_in(rng, step), config.sampling.batch_size)
  if not parallel.is_main_process():
    return
  path = os.path.join(workdir, 'samples', f'step_{step}.png')
  plotting.save_samples_picture(config, samples, path, title=f'step {step} (EMA, {nfe} NFE)')
  np.savez_compressed(os.path.join(workdir, 'samples', f'step_{step}.npz'), samples=samples)
  reporting.say(f'Wrote {path}')
