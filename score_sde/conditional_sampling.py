"""sample.py's conditional modes: class labels (classifier-free or classifier guidance),
inpainting and colorization, on all local devices.

One score function is built per device from the model (and classifier) parameters: plain,
classifier-free guided (``--labels`` on a class-conditional model, ``sampling.guidance_scale``
and its sigma interval) or classifier guided (``--labels`` with ``--classifier_workdir``,
``sampling.classifier_scale``). It drives the sampler of ``config.sampling``, or, given an
observed image, the PC inpainter / colorizer of ``controllable`` (guidance and inpainting
combine). Labels, images and masks are cycled to ``--num_samples`` and split over devices.
"""
from __future__ import annotations

import math
import os
import time

import jax
import numpy as np

from score_sde import controllable, datasets, guidance, parallel, sampling, training
from score_sde.errors import ConfigError, DataError, MissingFileError
from score_sde.generation import sample_shape
from score_sde.models import classifier as classifiers
from score_sde.models import utils as mutils

FLAG_NAMES = ('labels', 'classifier_workdir', 'inpaint_image', 'inpaint_mask', 'colorize_image')


def requested(flags) -> bool:
  """Whether any conditional flag of sample.py is set."""
  return any(getattr(flags, name, None) for name in FLAG_NAMES)


def check_guidance_settings(config, flags) -> None:
  """Guidance settings that the flags would leave unused stop sample.py before it reads
  anything: classifier-free guidance (``sampling.guidance_scale`` and its sigma interval) acts
  with ``--labels`` and no classifier, ``sampling.classifier_scale`` with
  ``--classifier_workdir``."""
  s = config.sampling
  free = [f'sampling.{k}={s[k]}' for k, default in (('guidance_scale', 0.0),
                                                    ('guidance_sigma_min', 0.0),
                                                    ('guidance_sigma_max', float('inf')))
          if s[k] != default]
  scaled = [f'sampling.classifier_scale={s.classifier_scale}'] if s.classifier_scale != 1.0 else []
  if not flags.labels and (free or scaled):
    raise ConfigError(f'{", ".join(free + scaled)} guides class-conditional sampling and has no '
                      "effect without --labels (e.g. --labels=0,1 or --labels=all).")
  if flags.classifier_workdir and free:
    raise ConfigError(f'{", ".join(free)} is classifier-free guidance and has no effect with '
                      '--classifier_workdir; classifier guidance is scaled by '
                      'sampling.classifier_scale.')
  if not flags.classifier_workdir and scaled:
    raise ConfigError(f'{scaled[0]} scales classifier guidance and needs --classifier_workdir; '
                      'classifier-free guidance is scaled by sampling.guidance_scale.')


def parse_labels(spec: str, num_classes: int | None) -> np.ndarray:
  """'3' or '0,1,2' or 'all' -> (L,) int32 labels, checked against ``num_classes``."""
  if not num_classes:
    raise ConfigError('--labels needs data.num_classes (a class-conditional model, or a '
                      'classifier via --classifier_workdir).')
  if spec.strip() == 'all':
    return np.arange(num_classes, dtype=np.int32)
  try:
    labels = np.array([int(v) for v in spec.split(',')], np.int64)
  except ValueError:
    raise DataError(f"--labels={spec!r}: give integers separated by commas, or 'all'.") from None
  return guidance.check_labels(labels, num_classes)


def load_array(path: str, config, what: str) -> np.ndarray:
  """An image (or 2-D point) batch from .npy / .npz (first array) in the model's range, or from
  a PNG / JPEG in [0, 1] scaled like the training data; a leading batch axis is added if absent."""
  if not os.path.exists(path):
    raise MissingFileError(f'{what} file {path!r} does not exist.')
  if path.endswith('.npy'):
    x = np.load(path)
  elif path.endswith('.npz'):
    with np.load(path) as f:
      x = f[f.files[0]]
  else:
    from PIL import Image
    x = np.asarray(Image.open(path), np.float32) / 255.0
    x = x[..., None] if x.ndim == 2 else x[..., :3]
    if what != 'mask':
      x = np.asarray(datasets.get_data_scaler(config)(x))
  x = np.asarray(x, np.float32)
  per_example = sample_shape(config)
  return x[None] if x.ndim == len(per_example) else x


def _cycle(x: np.ndarray, n: int) -> np.ndarray:
  return x[np.arange(n) % len(x)]


def _score_builder(config, sde, model, labelled: bool, classifier):
  """make(params, clf_params, labels) -> score_fn(x, t), traced on each device."""
  continuous = config.training.continuous

  def make(params, clf_params, labels):
    if not labelled:
      return mutils.get_score_fn(sde, model, params, continuous=continuous)
    if classifier is not None:   # the paper's way: unconditional score + classifier gradient
      base = mutils.get_score_fn(sde, model, params, continuous=continuous)
      logit_fn = classifiers.get_logit_fn(sde, classifier, clf_params)
      return guidance.classifier_guided_score_fn(base, logit_fn, labels,
                                                 config.sampling.classifier_scale)
    return guidance.get_guided_score_fn(config, sde, model, params, labels)
  return make


def _sampler_builder(config, sde, shape, inputs):
  """draw(rng, score_fn, inputs) -> (x, nfe) for the mode the inputs ask for."""
  if 'grey' in inputs:
    colorize = controllable.get_colorizer(sde, shape, **controllable.pc_options(config))
    return lambda rng, score_fn, d: colorize(rng, score_fn, d['grey'])
  if 'image' in inputs:
    inpaint = controllable.get_inpainter(sde, shape, **controllable.pc_options(config))
    return lambda rng, score_fn, d: inpaint(rng, score_fn, d['image'], d['mask'])
  sampler = sampling.get_sampler(config, sde, shape)
  return lambda rng, score_fn, d: sampler(rng, score_fn)


def _inputs(config, flags, model, num_classes) -> tuple[dict, object, object]:
  """(per-example inputs, classifier module, classifier params) from the flags."""
  inputs, classifier, clf_params = {}, None, None
  if flags.classifier_workdir:
    from score_sde import classifier_training
    classifier, clf_params = classifier_training.load_classifier(config, flags.classifier_workdir)
  if flags.labels:
    inputs['labels'] = parse_labels(flags.labels, num_classes)
    if classifier is None:
      guidance.check_guidable(model)
  elif classifier is not None:
    raise ConfigError('--classifier_workdir guides towards --labels; give them too.')
  if flags.colorize_image:
    inputs['grey'] = load_array(flags.colorize_image, config, 'colorize_image')
  if bool(flags.inpaint_image) != bool(flags.inpaint_mask):
    raise ConfigError('Inpainting needs both --inpaint_image and --inpaint_mask.')
  if flags.inpaint_image:
    if flags.colorize_image:
      raise ConfigError('Give either --inpaint_image/--inpaint_mask or --colorize_image.')
    inputs['image'] = load_array(flags.inpaint_image, config, 'inpaint_image')
    mask = load_array(flags.inpaint_mask, config, 'mask')
    per_example = sample_shape(config)
    if mask.shape[1:] != per_example and mask.shape[1:] != per_example[:-1] + (1,):
      raise DataError(f'--inpaint_mask has shape {mask.shape[1:]} per example; the model draws '
                      f'{per_example}: use that shape or {per_example[:-1] + (1,)}.')
    inputs['mask'] = np.broadcast_to(mask, mask.shape[:1] + per_example).astype(np.float32)
  if 'image' in inputs and inputs['image'].shape[1:] != sample_shape(config):
    raise DataError(f'--inpaint_image has shape {inputs["image"].shape[1:]} per example; the '
                    f'model draws {sample_shape(config)}.')
  return inputs, classifier, clf_params


def draw(config, flags, sde, model, params, num_samples: int, rng):
  """(samples (num_samples, ...), per-example inputs used (cycled), NFE of one call)."""
  num_classes = mutils.num_classes(model) or config.data.num_classes
  inputs, classifier, clf_params = _inputs(config, flags, model, num_classes)
  devices = jax.local_devices()
  per_call = config.sampling.batch_size
  per_device = parallel.per_device_batch_size(per_call, len(devices))
  shape = (per_device,) + sample_shape(config)
  make_score = _score_builder(config, sde, model, 'labels' in inputs, classifier)
  sample = _sampler_builder(config, sde, shape, inputs)

  def per_device_fn(args, rng):
    params, clf_params, batch = args
    return sample(rng, make_score(params, clf_params, batch.get('labels')), batch)
  p_sample = parallel.pmap_sampling(per_device_fn, devices)
  p_params = parallel.replicate((params, clf_params), devices)
  total = math.ceil(num_samples / per_call) * per_call
  cycled = {k: _cycle(v, total) for k, v in inputs.items()}
  out, nfe = [], 0
  for r in range(total // per_call):
    batch = {k: parallel.shard(v[r * per_call:(r + 1) * per_call], len(devices))
             for k, v in cycled.items()}
    x, nfe = p_sample((*p_params, batch), jax.random.fold_in(rng, r))
    out.append(parallel.unshard(parallel.to_host(x)))
  used = {k: v[:num_samples] for k, v in cycled.items()}
  return np.concatenate(out)[:num_samples], used, int(np.asarray(nfe).reshape(-1)[0])


def scatter_by_label(samples, labels, path: str, title: str = '') -> str:
  """2-D samples coloured by the class they were asked for."""
  from score_sde import plotting
  plt = plotting.plt
  fig, ax = plt.subplots(figsize=(4.6, 4.6))
  for y in np.unique(labels):
    pts = samples[labels == y]
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5, label=f'y = {y}', color=f'C{y % 10}')
  lim = plotting.extent(samples)
  ax.set_xlim(-lim, lim)
  ax.set_ylim(-lim, lim)
  ax.set_aspect('equal')
  ax.legend(markerscale=6, loc='upper right')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(plotting._ensure_dir(path), dpi=110)
  plt.close(fig)
  return path


def run(config, flags, sde, model, params, step: int, num_samples: int, outdir: str):
  """Draws conditional samples (seed ``flags.seed``), writes ``conditional_<step>.npz`` and a
  picture, and reports them."""
  t0 = time.time()
  samples, used, nfe = draw(config, flags, sde, model, params, num_samples,
                            jax.random.PRNGKey(flags.seed))
  wall = time.time() - t0
  os.makedirs(outdir, exist_ok=True)
  npz = os.path.join(outdir, f'conditional_{step}.npz')
  np.savez_compressed(npz, samples=samples, **used)
  png = os.path.join(outdir, f'conditional_{step}.png')
  s = config.sampling
  title = (f'labels, w={s.guidance_scale:g}' if 'labels' in used and not flags.classifier_workdir
           else f'labels, classifier scale {s.classifier_scale:g}' if 'labels' in used else '')
  if config.data.image_size is None:
    labels = used.get('labels', np.zeros(len(samples), np.int32))
    written = scatter_by_label(samples, labels, png, title=title)
  else:
    observed = used.get('image', used.get('grey'))
    if observed is not None:   # observations beside their completions, row by row
      observed = np.broadcast_to(observed, observed.shape[:-1] + samples.shape[-1:])
      samples = np.stack([observed, samples], 1).reshape((-1,) + samples.shape[1:])
    written = training.save_samples_picture(config, samples, png)
  print(f'{num_samples} conditional samples ({nfe} NFE per sample batch) in {wall:.1f}s '
        f'including compilation, from step {step}.\nWrote {npz}\nWrote {written}')
