"""Drawing samples from a trained model on all devices: the one place samplers meet models.

model -> score_fn (plain, classifier-free or classifier guided, autoguided; x0 clipped if asked) -> sampler (any METHODS entry,
or the PC inpainter / colorizer) on every device of every host (``get_sample_fn``), and ``draw``,
the one loop that calls it until enough samples are drawn. sample.py, the training loop's
snapshots, the evaluation loop and the experiment runner all sample through here.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import datasets, parallel, reporting, sampling, sde_lib
from score_sde.datasets import latents
from score_sde.errors import ConfigError, DataError
from score_sde.models import classifier as classifiers
from score_sde.models import utils as mutils
from score_sde.sampling import autoguidance, controllable_generation, guidance, x0_clip


def _score_builder(config, sde, model, classifier=None, guide=None) -> Callable:
  """make(params, inputs) -> score_fn(x, t), traced on each device: plain; classifier-free
  guided (``inputs['labels']`` on a class-conditional model, ``inputs['context']`` against
  ``inputs['null_context']`` on a context-conditional one); or, with ``classifier``, the
  unconditional score plus the classifier's gradient (params is then (model, classifier)).
  With an autoguidance ``guide`` that score is guided away from the guide's (params is then
  (those params, the guide's)). A MeanFlow model (training.objective='meanflow') gives its
  average velocity u(x, r, t)."""
  continuous = config.training.continuous
  if config.training.get('objective') == 'meanflow':
    return lambda params, inputs: mutils.get_average_velocity_fn(sde, model, params)
  if guide is not None:
    unguided = _score_builder(config, sde, model, classifier)
    s = config.sampling
    options = (float(s.autoguidance_scale), float(s.autoguidance_sigma_min),
               float(s.autoguidance_sigma_max))

    def make_autoguided(params, inputs):
      params, guide_params = params
      return autoguidance.autoguided_score_fn(unguided(params, inputs),
                                              guide.score_fn(sde, guide_params), sde, *options)
    return make_autoguided

  def make(params, inputs):
    if classifier is not None:   # the paper's way: unconditional score + classifier gradient
      params, clf_params = params
    if 'context' in inputs:
      return guidance.get_context_guided_score_fn(config, sde, model, params, inputs['context'],
                                                  inputs.get('null_context'))
    if 'labels' not in inputs:
      return mutils.get_score_fn(sde, model, params, continuous=continuous)
    if classifier is not None:
      base = mutils.get_score_fn(sde, model, params, continuous=continuous)
      logit_fn = classifiers.get_logit_fn(sde, classifier, clf_params)
      return guidance.classifier_guided_score_fn(base, logit_fn, inputs['labels'],
                                                 config.sampling.classifier_scale)
    return guidance.get_guided_score_fn(config, sde, model, params, inputs['labels'])
  return make


def _sampler_builder(config, sde, shape, input_keys) -> Callable:
  """draw(rng, score_fn, inputs) -> (x, nfe): the PC colorizer / inpainter for an observed
  image, else the sampler of ``config.sampling``."""
  if 'grey' in input_keys:
    colorize = controllable_generation.get_colorizer(
        sde, shape, **controllable_generation.pc_options(config))
    return lambda rng, score_fn, d: colorize(rng, score_fn, d['grey'])
  if 'image' in input_keys:
    inpaint = controllable_generation.get_inpainter(
        sde, shape, **controllable_generation.pc_options(config))
    return lambda rng, score_fn, d: inpaint(rng, score_fn, d['image'], d['mask'])
  sampler = sampling.get_sampler(config, sde, shape)
  return lambda rng, score_fn, d: sampler(rng, score_fn)


class SampleFn:
  """``sample_fn(params, inputs, rng) -> (samples, nfe)``: one call draws ``batch_size``
  samples (``config.sampling.batch_size``, split over every device of every host, a distinct
  key per device). ``params`` come from ``put_params``; ``inputs`` are this host's share of the
  per-example inputs (labels, observed images, masks; {} for plain sampling). Every host gets
  the whole (batch_size, ...) array. ``decode`` (latent diffusion) maps what the model drew to
  images; ``draw`` applies it."""

  def __init__(self, per_device: Callable, mesh, batch_size: int, input_keys: tuple[str, ...],
               decode: Callable[[np.ndarray], np.ndarray] | None = None,
               guide_params: Any = None):
    self.mesh, self.batch_size, self.input_keys = mesh, batch_size, input_keys
    self.decode, self.guide_params = decode, guide_params
    self._step = parallel.sampling_step(per_device, mesh)
    self._fits = False

  def put_params(self, params: Any) -> Any:
    """The model's parameters (with the autoguidance guide's, if any) on every device."""
    if self.guide_params is not None:
      params = (params, self.guide_params)
    return parallel.replicate_global(params, self.mesh)

  def _args(self, params, inputs, rng):
    n_local = len(self.mesh.local_devices)
    return params, parallel.put_batch(parallel.shard(inputs, n_local), self.mesh), rng

  def compile(self, params, inputs, rng) -> None:
    """Compiles now (e.g. to time sampling without compilation)."""
    self._step.compile(*self._args(params, inputs, rng))

  def __call__(self, params, inputs, rng) -> tuple[np.ndarray, int]:
    args = self._args(params, inputs, rng)
    if not self._fits:   # the first call compiles: does it fit the device memory?
      parallel.check_memory(
          self._step.compile(*args), 'Sampling',
          f'sampling.batch_size={self.batch_size}, {self.batch_size // self.mesh.size} per device',
          "Lower sampling.batch_size (more samples are drawn in more calls), or set "
          "model.dtype='bfloat16'.")
      self._fits = True
    samples, nfe = self._step(*args)
    return parallel.fetch(samples), int(np.asarray(parallel.to_local(nfe)))


def get_sample_fn(config, sde, model, devices: Sequence | None = None, *,
                  input_keys: Sequence[str] = (), classifier=None,
                  wrap_score: Callable | None = None) -> SampleFn:
  """The sampler of ``config.sampling`` driven by ``model`` on every device (``devices``: a
  subset of this host's, single-process only). ``input_keys`` name the per-example inputs a
  call gets ('labels', 'context' [+ 'null_context'], 'image' + 'mask', 'grey'); ``classifier`` (a module) turns labels into
  classifier guidance; ``wrap_score(score_fn) -> score_fn`` is applied last (progress
  reporting: ``progress.TimeTracker.wrap``). The sampler is built (and its config validated)
  here, once; it is compiled on the first call."""
  mesh = parallel.make_mesh(list(devices) if devices is not None and jax.process_count() == 1
                            else None)
  batch_size = config.sampling.batch_size
  per_device = parallel.per_device_batch_size(batch_size, len(mesh.local_devices))
  shape = (per_device,) + datasets.sample_shape(config)
  guide = autoguidance.load(config)
  make_score = _score_builder(config, sde, model, classifier, guide)
  draw_one = _sampler_builder(config, sde, shape, tuple(input_keys))

  def per_device_fn(params, inputs, rng):
    score_fn = x0_clip.from_config(config, sde, make_score(params, inputs))
    return draw_one(rng, wrap_score(score_fn) if wrap_score else score_fn, inputs)
  decode = latents.get_decoder(config) if config.data.get('latents') else None
  return SampleFn(per_device_fn, mesh, batch_size, tuple(input_keys), decode,
                  guide.params if guide is not None else None)


def draw(sample_fn: SampleFn, params: Any, rng, num_samples: int,
         inputs: dict[str, np.ndarray] | None = None,
         on_round: Callable[[int, int], None] | None = None
         ) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
  """The one draw loop: calls ``sample_fn`` until ``num_samples`` are drawn, over all hosts.

  ``inputs`` (per-example arrays, the same on every host) are cycled to ``num_samples``; call r
  uses key ``fold_in(rng, r)``. Returns the samples (num_samples, ...), the inputs each sample
  was drawn with, and the NFE of one call. A latent model's samples are decoded to images.
  ``on_round(r, rounds)`` is called before each call (progress reporting).
  """
  inputs = inputs or {}
  per_call = sample_fn.batch_size
  total = math.ceil(num_samples / per_call) * per_call
  cycled = {k: np.asarray(v)[np.arange(total) % len(v)] for k, v in inputs.items()}
  params = sample_fn.put_params(params)
  mine = parallel.host_local_slice(per_call)
  out, nfe = [], 0
  for r in range(total // per_call):
    if on_round is not None:
      on_round(r, total // per_call)
    batch = {k: v[r * per_call:(r + 1) * per_call][mine] for k, v in cycled.items()}
    samples, nfe = sample_fn(params, batch, jax.random.fold_in(rng, r))
    out.append(samples)
  samples = np.concatenate(out)[:num_samples]
  if sample_fn.decode is not None:
    samples = sample_fn.decode(samples)
  return samples, {k: v[:num_samples] for k, v in cycled.items()}, nfe


def draw_rounds(sample_fn: SampleFn, params: Any, rng, num_samples: int, out_dir: str,
                process: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
                label: str = '') -> tuple[dict[str, np.ndarray], int]:
  """``draw`` in rounds that survive preemption: the evaluation loop's and the experiments'.

  Round r draws ``sample_fn.batch_size`` samples with key ``fold_in(rng, r)`` on every device
  of every host; ``process(samples) -> {name: array}`` (default ``{'samples': samples}``; e.g.
  uint8 pixels and their Inception features) is stored at once as ``<out_dir>/round_<r>.npz``
  (by the main process, atomically), so a rerun reads the finished rounds and draws only the
  rest. Returns every array over all rounds cut to ``num_samples``, and the NFE of one call.
  """
  process = process or (lambda samples: {'samples': samples})
  rounds = math.ceil(num_samples / sample_fn.batch_size)
  parts, nfe, t0, fresh = [], 0, time.time(), 0
  for r in range(rounds):
    path = os.path.join(out_dir, f'round_{r}.npz')
    if os.path.exists(path):
      with np.load(path) as f:
        parts.append({k: f[k] for k in f.files})
      continue
    samples, _, nfe = draw(sample_fn, params, jax.random.fold_in(rng, r), sample_fn.batch_size)
    parts.append({**process(samples), 'nfe': np.asarray(nfe)})
    if parallel.is_main_process():
      reporting.write_npz(path, **parts[-1])
    fresh += 1
    eta = (time.time() - t0) / fresh * (rounds - r - 1)
    reporting.say(f'  {label}sampling round {r + 1}/{rounds} ({nfe} NFE)  '
                  f'ETA {reporting.format_eta(eta)}')
  keys = [k for k in parts[0] if k != 'nfe']
  return ({k: np.concatenate([p[k] for p in parts])[:num_samples] for k in keys},
          int(parts[-1]['nfe']))


def check_inputs(config, model, inputs: dict[str, np.ndarray], classifier=None) -> None:
  """DataError / ConfigError for conditional inputs that ``config``'s model cannot take: labels
  out of range or without a class-conditional model (or classifier), a context without a
  context-conditional model or of another shape, observed images or masks of the wrong shape,
  inpainting and colorization together."""
  per_example = datasets.sample_shape(config)
  for key in ('context', 'null_context'):
    if key in inputs:
      guidance.check_context(model, inputs[key], f'The {key.replace("_", " ")}')
  if 'labels' in inputs:
    num_classes = mutils.num_classes(model) or config.data.num_classes
    if not num_classes:
      raise ConfigError('--labels needs data.num_classes (a class-conditional model, or a '
                        'classifier via --classifier_workdir).')
    guidance.check_labels(inputs['labels'], num_classes)
    if classifier is None:
      guidance.check_guidable(model)
  elif classifier is not None:
    raise ConfigError('--classifier_workdir guides towards --labels; give them too.')
  if config.data.get('latents') and ('grey' in inputs or 'image' in inputs):
    raise ConfigError('Inpainting and colorization act on pixels; this model (data.latents) '
                      'draws latents.')
  if 'grey' in inputs and 'image' in inputs:
    raise ConfigError('Give either --inpaint_image/--inpaint_mask or --colorize_image.')
  if ('image' in inputs) != ('mask' in inputs):
    raise ConfigError('Inpainting needs both --inpaint_image and --inpaint_mask.')
  if 'image' in inputs and inputs['image'].shape[1:] != per_example:
    raise DataError(f'--inpaint_image has shape {inputs["image"].shape[1:]} per example; the '
                    f'model draws {per_example}.')
  if 'mask' in inputs and inputs['mask'].shape[1:] != per_example:
    raise DataError(f'--inpaint_mask has shape {inputs["mask"].shape[1:]} per example; the '
                    f'model draws {per_example}: use that shape or {per_example[:-1] + (1,)}.')


def reverse_sde_paths(rng, score_fn, sde, x_T, num_steps: int = 200, eps: float = 1e-3,
                      num_saved: int = 50, probability_flow: bool = True):
  """Euler(–Maruyama) paths of the probability-flow ODE (or reverse SDE) from x_T (K, D).

  For pictures: returns (paths (num_saved, K, D), times (num_saved,)) from t=T down to eps.
  """
  rsde = sde.reverse(score_fn, probability_flow=probability_flow)
  ts = jnp.linspace(sde.T, eps, num_steps)
  dt = -(sde.T - eps) / (num_steps - 1)

  def step(x, inputs):
    t, key = inputs
    drift, g = rsde.sde(x, jnp.full((x.shape[0],), t))
    x = x + drift * dt + sde_lib.batch_mul(g * jnp.sqrt(-dt), jax.random.normal(key, x.shape))
    return x, x

  _, xs = jax.lax.scan(step, x_T, (ts[:-1], jax.random.split(rng, num_steps - 1)))
  xs = jnp.concatenate([x_T[None], xs])
  keep = np.linspace(0, num_steps - 1, num_saved).round().astype(int)
  return np.asarray(xs)[keep], np.asarray(ts)[keep]
