"""A trained run from Python (a notebook, a script): ``run = score_sde.load(workdir)``.

    import score_sde
    run = score_sde.load('runs/demo_digits_vp')            # latest checkpoint, EMA parameters
    out = run.sample(64, method='dpm_solver', num_steps=20)
    out.images, out.nfe                                     # (64, 16, 16, 1) in [0, 1]; 20
    run.likelihood(out.images).mean                         # bits/dim (2-D data: NLL in nats)
    run.score_fn(x, t)                                      # the network as a score s(x, t)

``load`` reads the config the run was trained with (stored in its checkpoints and in
``<workdir>/config.json``), restores the EMA (or raw) parameters of one checkpoint and builds the
SDE and the network. ``Run.sample`` draws with any sampling method through the same draw loop as
``sample.py`` (``generation``), on every local device (every device of every host in a
multi-host job); images come back in data space ([0, 1]). Settings follow
``sampling.settings``: the run's own method uses the run's settings, another method its own
defaults, and keyword arguments win. Compiled samplers are kept per setting, so a second call
with the same settings and batch does not compile again.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Sequence

import jax
import numpy as np

from score_sde import datasets, generation
from score_sde import parallel, progress, runs, sde_lib
from score_sde.errors import DataError, MissingFileError
from score_sde.models import prompts as prompt_lib
from score_sde.models import utils as mutils
from score_sde.sampling import settings as sampler_settings


@dataclasses.dataclass(frozen=True)
class Samples:
  """What ``Run.sample`` drew: ``images`` (n, H, W, C) in [0, 1] (2-D data: (n, D) points),
  the NFE of one sampler call, the wall time (including compilation on a first call), the
  method and the ``sampling.*`` settings it ran with, and the labels asked for (or None)."""
  images: np.ndarray
  nfe: int
  seconds: float
  method: str
  settings: dict
  labels: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Likelihood:
  """Per-example ``values`` in ``unit`` ('bits/dim' for images, 'nats' for 2-D data)."""
  values: np.ndarray
  unit: str
  nfe: float

  @property
  def mean(self) -> float:
    return float(np.mean(self.values))

  @property
  def std_err(self) -> float:
    n = len(self.values)
    return float(np.std(self.values, ddof=1) / math.sqrt(n)) if n > 1 else float('nan')


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
  """A trained model: ``config`` (the run's, a ConfigDict), ``params`` (EMA unless loaded
  with ``ema=False``), ``step``, ``sde``, ``model`` (the Flax module) and ``workdir``."""
  workdir: str
  config: Any
  step: int
  params: Any
  sde: sde_lib.SDE
  model: Any
  ema: bool = True
  devices: tuple | None = None
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def shape(self) -> tuple[int, ...]:
    """One example's shape: (H, W, C) for images, (D,) for low-dimensional data."""
    return datasets.sample_shape(self.config)

  @functools.cached_property
  def score_fn(self):
    """``score_fn(x, t) -> score``: x (B, *shape) in the model's range, t (B,); jitted."""
    raw = mutils.get_score_fn(self.sde, self.model, self.params, train=False,
                              continuous=self.config.training.continuous)
    return jax.jit(raw)

  def sampler_config(self, method: str | None = None, **settings):
    """The config a ``sample(method=..., **settings)`` call runs with (``sampling.settings``)."""
    config, _ = sampler_settings.for_method(self.config, method, settings)
    return config

  def sample(self, n: int, method: str | None = None, *, seed: int = 0,
             labels: Sequence[int] | None = None, prompts: Sequence[str] | None = None,
             contexts: np.ndarray | None = None, batch_size: int | None = None,
             show_progress: bool = True, **settings) -> Samples:
    """``n`` samples with ``method`` (default: the run's) and ``settings`` (``sampling.*`` keys,
    e.g. ``num_steps=20``, ``guidance_scale=2``). ``labels`` (cycled to n) sample a
    class-conditional model, ``prompts`` (cycled) a text-conditional one (``sample.py
    --prompt``'s encoding, guided against the empty prompt), ``contexts`` (P, L, D) (cycled) a
    context-conditional one directly (e.g. unCLIP's decoder: image embeddings), guided against
    the zero null context; ``batch_size``: samples per sampler call over all devices
    (default: the run's ``sampling.batch_size``, at most n rounded up to the devices)."""
    config, _ = sampler_settings.for_method(self.config, method, settings)
    s = config.sampling
    n_dev = len(self.devices) if self.devices else jax.device_count()
    per_call = batch_size or min(s.batch_size, math.ceil(n / n_dev) * n_dev)
    with s.unlocked():
      s.batch_size = per_call
    inputs = {}
    if labels is not None:
      inputs['labels'] = np.asarray(labels, np.int32).reshape(-1)
    if prompts is not None:
      inputs.update(prompt_lib.contexts(config, self.model, prompts))
    if contexts is not None:
      if prompts is not None:
        raise DataError('Give prompts or contexts, not both: prompts are encoded into contexts.')
      contexts = np.asarray(contexts, np.float32)
      inputs.update(context=contexts, null_context=np.zeros_like(contexts[:1]))
    if inputs:
      generation.check_inputs(config, self.model, inputs)
    sample_fn, tracker = self._sample_fn(config, tuple(inputs))
    rounds = math.ceil(n / per_call)
    t0 = time.time()
    with progress.Progress(rounds * 100, f'sample {s.method}', unit='%',
                           interval=None if show_progress else float('inf')) as bar:
      tracker.bar, tracker.span = bar, 100.0
      try:
        x, used, nfe = generation.draw(sample_fn, self.params, jax.random.PRNGKey(seed), n,
                                       inputs, on_round=lambda r, _: setattr(tracker, 'base', 100 * r))
      finally:
        tracker.bar = None
    images = np.asarray(datasets.get_data_inverse_scaler(config)(x))
    chosen = {k: s[k] for k in sorted(s.keys())}
    return Samples(images, int(nfe), time.time() - t0, s.method, chosen, used.get('labels'))

  def _sample_fn(self, config, input_keys: tuple[str, ...]):
    key = (json.dumps(config.sampling.to_dict(), sort_keys=True, default=str), input_keys)
    if key not in self._compiled:
      tracker = progress.TimeTracker(self.sde.T, config.sampling.eps)
      self._compiled[key] = (generation.get_sample_fn(
          config, self.sde, self.model, self.devices, input_keys=input_keys,
          wrap_score=tracker.wrap), tracker)
    return self._compiled[key]

  def likelihood(self, x, *, seed: int = 0, dequantize: bool = True, batch_size: int | None = None,
                 hutchinson_type: str | None = None, show_progress: bool = True) -> Likelihood:
    """Per-example bits/dim (images) or negative log-likelihood in nats (2-D data) of ``x``
    (n, *shape) in data space ([0, 1] images), through the probability-flow ODE with the run's
    ``eval.likelihood_*`` settings, on every device (``batch_size`` examples per call, default
    ``eval.batch_size``). Images are quantised to 8 bits and uniformly dequantised first, as the
    paper's bits/dim (``dequantize=False`` takes them as they are)."""
    x = np.asarray(x, np.float32)
    if x.ndim < 2 or x.shape[1:] != self.shape:
      raise DataError(f'likelihood: x has examples of shape {x.shape[1:]}; the model takes '
                      f'{self.shape}.')
    image = self.config.data.image_size is not None
    if image and dequantize:
      noise = np.random.default_rng(seed).random(x.shape, dtype=np.float32)
      x = (np.round(np.clip(x, 0, 1) * 255) + noise) / 256.0
    x = np.asarray(datasets.get_data_scaler(self.config)(x), np.float32)
    step, mesh = self._likelihood_step(hutchinson_type)
    n_local = len(mesh.local_devices)
    per_call = batch_size or self.config.eval.batch_size
    per_call = math.ceil(min(per_call, len(x)) / jax.device_count()) * jax.device_count()
    mine = parallel.host_local_slice(per_call)
    params = parallel.replicate_global(self.params, mesh)
    values, nfes = [], []
    rounds = math.ceil(len(x) / per_call)
    with progress.Progress(rounds, 'likelihood', unit='batch',
                           interval=None if show_progress else float('inf')) as bar:
      for r in range(rounds):
        chunk = x[r * per_call:(r + 1) * per_call]
        mask = np.arange(per_call) < len(chunk)
        chunk = np.concatenate([chunk, np.zeros((per_call - len(chunk),) + self.shape,
                                                np.float32)])
        batch = parallel.shard({'image': chunk[mine], 'mask': mask[mine]}, n_local)
        value, _, nfe = step(params, parallel.put_batch(batch, mesh),
                             jax.random.fold_in(jax.random.PRNGKey(seed), r))
        values.append(parallel.fetch(value)[mask])
        nfes.append(np.mean(parallel.fetch(nfe)))
        bar.update()
    return Likelihood(np.concatenate(values).astype(np.float64),
                      'bits/dim' if image else 'nats', float(np.mean(nfes)))

  def _likelihood_step(self, hutchinson_type: str | None):
    key = ('likelihood', hutchinson_type)
    if key not in self._compiled:
      from score_sde.evaluation import bpd
      config = self.config.copy_and_resolve_references()
      if hutchinson_type is not None:
        with config.eval.unlocked():
          config.eval.likelihood_hutchinson_type = hutchinson_type
      mesh = parallel.make_mesh(list(self.devices) if self.devices and jax.process_count() == 1
                                else None)
      self._compiled[key] = (parallel.per_example_step(
          bpd.get_eval_step(config, self.sde, self.model), mesh), mesh)
    return self._compiled[key]


def load(workdir: str, step: int | None = None, ema: bool = True, config=None,
         devices: Sequence | None = None) -> Run:
  """The run in ``workdir`` at checkpoint ``step`` (default: the latest).

  ``ema``: the EMA parameters (what the paper samples) or the raw ones. ``config``: a
  ConfigDict to use instead of the stored one (it must be the same run: checked as
  ``sample.py`` does). ``devices``: a subset of this host's devices (default: all).
  Raises ``MissingFileError`` / ``CheckpointError`` / ``ConfigError`` with one-line messages.
  """
  if not os.path.isdir(workdir):
    raise MissingFileError(f'{workdir} does not exist: give the --workdir of a trained run.')
  config = config if config is not None else runs.stored_run_config(workdir, step)
  model, params, step = runs.restore(workdir, config, step, ema)
  return Run(workdir=os.path.abspath(workdir), config=config, step=step,
             params=params, sde=sde_lib.get_sde(config), model=model, ema=ema,
             devices=tuple(devices) if devices is not None else None)

