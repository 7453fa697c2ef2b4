"""Sample from a trained model: ``score-sde-sample --workdir=runs/spiral`` (or ``sample.py``).

Restores the EMA parameters of the latest (or ``--step``) checkpoint, runs the sampler of
``config.sampling`` (override with e.g. ``--config.sampling.method=ode``) on all local devices,
and writes ``<outdir>/samples_step<step>_<method>_nfe<NFE>_seed<seed>[_<tag>].npz`` and a PNG of
the same name (an image grid; for 2-D data a scatter plot over the data and a picture of the
learned score field with probability-flow ODE paths); a name already taken gets ``_2``, ``_3``,
..., so nothing is overwritten. The config is the run's own (``<workdir>/config.json``) unless
``--config`` names another file, which is then checked against the checkpoint's. Another method
than the config's runs with that method's defaults, not the settings the config chose for its
own method (``sampling.settings``; a line says what was left out). The sampler settings are
checked before anything is restored; errors are one line on stderr (``--traceback`` for the
stack).

Conditional sampling (through ``score_sde.generation``, like plain sampling): ``--labels=0,1``
(classifier-free guidance with ``--config.sampling.guidance_scale``, ``guidance_sigma_min/max``;
or classifier guidance with ``--classifier_workdir``), ``--inpaint_image`` + ``--inpaint_mask``,
``--colorize_image``; they write ``conditional_step<step>_<what>_...{npz,png}``: images one row
per class, or one row per example as masked input | completion | original. ``--inpaint_mask``
is a file or a built-in mask (``half``, ``top``, ``box``, ``random:0.5``; ``sampling.masks``).
Text conditioning (a context-conditional model, ``model.name='unet_condition'``): ``--prompt``
(repeatable) is tokenized and encoded by ``config.text``'s CLIP tokenizer and text encoder, and
sampled with classifier-free guidance against the empty prompt (``sampling.guidance_scale``); one
row per prompt. A too-long prompt is truncated with a one-line note; an empty prompt, or a prompt
for a model without a context, stops before any work. ``--unet_weights`` samples a diffusers
``UNet2DConditionModel`` (a folder holding diffusion_pytorch_model.safetensors, or the file),
converted into the configured architecture (a file that does not fit fails naming its keys);
a latent model's samples are decoded by ``data.latents``' autoencoder (e.g. SD's vae/ folder).
This file owns the flags and the files; labels, prompts, images and masks are cycled to
``--num_samples`` and split over devices.
"""
import os
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from score_sde import checkpointing, cli, config_checks, consistency, datasets, errors
from score_sde import generation, models, plotting, progress, reporting, runs, sde_lib
from score_sde.checkpointing import paper
from score_sde.errors import ConfigError, DataError, MissingFileError
from score_sde.models import convert_unet, prompts as prompt_lib, torch_weights, unet_condition
from score_sde.models import utils as mutils
from score_sde.sampling import grid_optimisation, guidance, masks
from score_sde.sampling import settings as sampler_settings

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'The config the model was trained with '
                                '(default: the one stored in --workdir).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/ (outputs go there too).')
flags.DEFINE_integer('step', None, 'Checkpoint step to restore (default: the latest).')
flags.DEFINE_string('paper_checkpoint', None,
                    "A checkpoint file (or checkpoints/ folder) of the paper's code "
                    '(yang-song/score_sde); its EMA parameters are sampled instead of --workdir\'s.')
flags.DEFINE_integer('num_samples', None,
                     'Number of samples, >= 1 (default: config.sampling.batch_size).',
                     lower_bound=1)
flags.DEFINE_string('outdir', None, 'Where to write samples (default: <workdir>/samples).')
flags.DEFINE_string('tag', None, 'A name added to the output files (default: none).')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.DEFINE_string('labels', None, "Class labels to sample, cycled: '3', '0,1,2' or 'all'.")
flags.DEFINE_multi_string('prompt', None, 'A text prompt (repeat the flag for several, cycled) '
                          'for a text-conditional model; config.text names its encoder.')
flags.DEFINE_string('unet_weights', None, "Sample a diffusers UNet2DConditionModel's weights (a "
                    'folder with diffusion_pytorch_model.safetensors, or the file) instead of '
                    "--workdir's checkpoints.")
flags.DEFINE_string('classifier_workdir', None, 'Guide --labels with the classifier trained there '
                    '(train.py --mode=train_classifier) instead of classifier-free guidance.')
flags.DEFINE_string('inpaint_image', None,
                    'Observed images (.npy/.npz in the model range, or PNG).')
flags.DEFINE_string('inpaint_mask', None,
                    "Mask for --inpaint_image: 1 = observed (.npy/.npz/PNG), or 'half', 'top', "
                    "'box', 'random:<missing share>'.")
flags.DEFINE_string('colorize_image', None, 'Grey images to colorize (.npy/.npz, or PNG).')
flags.DEFINE_bool('optimise_grid', False,
                  "First optimise config.sampling's time grid for this checkpoint "
                  '(grid_optimisation; num_steps steps of the method) and write it to '
                  'config.sampling.grid_path (default <workdir>/grids/), then sample on it.')
flags.mark_flags_as_required(['workdir'])

CONDITIONAL_FLAGS = ('labels', 'prompt', 'classifier_workdir', 'inpaint_image', 'inpaint_mask',
                     'colorize_image')


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
  if flags.labels and flags.prompt:
    raise ConfigError('Give either --labels or --prompt: a model is conditioned on one of them.')
  if flags.prompt and (scaled or flags.classifier_workdir):
    raise ConfigError('--prompt is guided classifier-free (sampling.guidance_scale); classifier '
                      'guidance (--classifier_workdir, sampling.classifier_scale) takes --labels.')
  if not (flags.labels or flags.prompt) and (free or scaled):
    raise ConfigError(f'{", ".join(free + scaled)} guides conditional sampling and has no '
                      "effect without --labels (e.g. --labels=0,1 or --labels=all) or --prompt.")
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
  bad = np.count_nonzero(~np.isfinite(x))
  if bad:
    raise DataError(f'{what} file {path!r} holds {bad} NaN or infinite values; give finite ones.')
  if what == 'mask' and not np.all((x >= 0) & (x <= 1)):
    raise DataError(f'mask file {path!r}: values must be in [0, 1] (1 = observed), not '
                    f'{float(x.min()):g} to {float(x.max()):g}.')
  per_example = datasets.sample_shape(config)
  return x[None] if x.ndim == len(per_example) else x


def test_images(config, num: int) -> np.ndarray:
  """The first ``num`` images of the test split, in the model's range (what a built-in mask
  is applied to when no --inpaint_image is given)."""
  batch = next(datasets.get_dataset(config, 'test', num_local_devices=1, batch_size=num))
  return np.asarray(batch['image'][0], np.float32)


def conditional_inputs(config, flags, num_classes: int | None,
                       num_samples: int = 1, model=None) -> dict[str, np.ndarray]:
  """The per-example inputs the flags ask for: 'labels', 'context' + 'null_context' (the
  prompts' and the empty prompt's text-encoder states), 'image' + 'mask' (broadcast to the
  model's shape), 'grey'. A built-in ``--inpaint_mask`` without ``--inpaint_image`` masks
  ``num_samples`` test-split images."""
  inputs = {}
  if flags.labels:
    inputs['labels'] = parse_labels(flags.labels, num_classes)
  if flags.prompt:
    inputs.update(prompt_lib.contexts(config, model, flags.prompt))
  if flags.colorize_image:
    inputs['grey'] = load_array(flags.colorize_image, config, 'colorize_image')
  if flags.inpaint_image:
    inputs['image'] = load_array(flags.inpaint_image, config, 'inpaint_image')
  if flags.inpaint_mask:
    per_example = datasets.sample_shape(config)
    if masks.is_builtin(flags.inpaint_mask) and len(per_example) == 3:
      if 'image' not in inputs:
        inputs['image'] = test_images(config, num_samples)
      mask = masks.builtin_mask(flags.inpaint_mask, len(inputs['image']), *per_example[:2],
                                seed=flags.seed)
    else:
      mask = load_array(flags.inpaint_mask, config, 'mask')
    if mask.shape[1:] == per_example[:-1] + (1,):
      mask = np.broadcast_to(mask, mask.shape[:1] + per_example)
    inputs['mask'] = np.asarray(mask, np.float32)
  return inputs


def restore_ema_params(config, workdir, step=None):
  """(step, EMA parameters) of a checkpoint trained with ``config``: the classic EMA, or the
  post-hoc EMA of length ``sampling.ema_sigma_rel`` at that step (``runs.restore``)."""
  if not os.path.isdir(workdir):
    raise errors.MissingFileError(f'--workdir {workdir} does not exist.')
  _, params, step = runs.restore(workdir, config, step)
  return step, params


def optimise_grid(config, sde, model, params, step: int, num: int) -> str:
  """Optimises config.sampling's grid for the restored parameters (at most 1024 prior draws,
  200 Adam steps), writes it next to the checkpoints and points config.sampling at it."""
  s = config.sampling
  num_steps = sde.N if s.num_steps is None else int(s.num_steps)
  score_fn = mutils.get_score_fn(sde, model, params, continuous=config.training.continuous)
  shape = (min(num, 1024),) + datasets.sample_shape(config)
  times, record = grid_optimisation.optimise_grid(
      sde, score_fn, shape, num_steps, method=s.method, order=s.order, variant=s.unipc_variant,
      eps=s.eps, seed=FLAGS.seed)
  path = s.grid_path or os.path.join(FLAGS.workdir, 'grids',
                                     f'{s.method}_{num_steps}steps_step{step}.json')
  grid_optimisation.save_grid(path, times, sde, dict(record, checkpoint_step=step))
  s.time_schedule, s.grid_path = 'optimised', path
  print(f"Optimised the {num_steps}-step grid of {s.method} (objective "
        f"{record['objective_init']:.3g} -> {record['objective_final']:.3g}): wrote {path}")
  return path


def plot_2d(config, sde, model, params, samples, stem: str, rng) -> list[str]:
  """``<stem>.png``: the samples over the data; ``score_field_<...>.png`` beside it: the learned
  score field with a few probability-flow paths (score models only)."""
  data = test_images(config, len(samples))
  name = os.path.basename(stem)
  scatter = plotting.scatter_2d(samples, stem + '.png', data=data,
                                title=f'{config.data.dataset}, {config.training.sde}: {name}')
  if config.training.get('objective') in consistency.OBJECTIVES:
    return [scatter]   # a few-step model's network is no score: no score field to draw
  score_fn = jax.jit(mutils.get_score_fn(sde, model, params, continuous=config.training.continuous))
  x_T = sde.prior_sampling(rng, (12, 2))
  paths, times = generation.reverse_sde_paths(rng, score_fn, sde, x_T)
  field_path = os.path.join(os.path.dirname(stem), 'score_field' + name[len('samples'):] + '.png')
  field = plotting.score_field(score_fn, [1.0, 0.5, 0.1, 0.01], field_path,
                               trajectories=paths, trajectory_times=times,
                               lim=plotting.extent(data), data=data)
  return [scatter, field]


def sampler_config(config, overrides: dict):
  """``config`` with the sampler settings it runs with: a ``--config.sampling.method`` other
  than the config file's starts from that method's defaults (``sampling.settings``); says what
  it left out."""
  explicit = {k.split('.', 1)[1]: v for k, v in overrides.items() if k.startswith('sampling.')}
  if 'method' not in explicit:
    return config
  from ml_collections.config_flags.config_flags import ConfigFileFlagParser
  original = ConfigFileFlagParser('config', lock_config=False).parse(
      config_flags.get_config_filename(FLAGS['config']))
  configured = original.sampling.method
  config, left_out = sampler_settings.for_method(config, None, explicit, configured)
  if left_out:
    reporting.say(sampler_settings.describe_left_out(left_out, configured, config.sampling.method))
  return config


def main(argv):
  del argv
  overrides = {**config_flags.get_override_values(FLAGS['config']), **cli.none_overrides()}
  config = sampler_config(FLAGS.config, overrides)
  config_checks.check(config, 'sample')
  config_checks.check_sampling_overrides(config, overrides)
  check_guidance_settings(config, FLAGS)
  outdir = FLAGS.outdir or os.path.join(FLAGS.workdir, 'samples')
  checkpointing.check_workdir(outdir, '--outdir')   # before any work, not after it
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  num = config.sampling.batch_size if FLAGS.num_samples is None else FLAGS.num_samples
  # Bad files and labels fail before anything is restored.
  if FLAGS.prompt:   # bad prompts fail before any file is read
    prompt_lib.check_prompts(FLAGS.prompt, model)
  unet_params = load_unet_weights(FLAGS.unet_weights, model) if FLAGS.unet_weights else None
  inputs = conditional_inputs(config, FLAGS, mutils.num_classes(model) or config.data.num_classes,
                              num, model)
  classifier, clf_params = None, None
  if FLAGS.classifier_workdir:
    classifier, clf_params = checkpointing.load_classifier(config, FLAGS.classifier_workdir)
  generation.check_inputs(config, model, inputs, classifier)
  if unet_params is not None:
    step, params = 0, unet_params
  elif FLAGS.paper_checkpoint:
    loaded = paper.load_paper_checkpoint(FLAGS.paper_checkpoint, config)
    step, params = loaded.step, loaded.ema_params
  else:
    step, params = restore_ema_params(config, FLAGS.workdir, FLAGS.step)
  reporting.say(reporting.banner('sample', config, params))
  if FLAGS.optimise_grid:
    optimise_grid(config, sde, model, params, step, num)
  tracker = progress.TimeTracker(sde.T, config.sampling.eps)
  sample_fn = generation.get_sample_fn(config, sde, model, input_keys=tuple(inputs),
                                       classifier=classifier, wrap_score=tracker.wrap)
  rng = jax.random.PRNGKey(FLAGS.seed)
  rounds = -(-num // sample_fn.batch_size)
  t0 = time.time()
  with progress.Progress(100 * rounds, f'sample ({config.sampling.method})', unit='%') as bar:
    tracker.bar, tracker.span = bar, 100.0
    samples, used, nfe = generation.draw(
        sample_fn, params if classifier is None else (params, clf_params), rng, num, inputs,
        on_round=lambda r, _: setattr(tracker, 'base', 100.0 * r))
    tracker.bar = None
  wall = time.time() - t0
  conditional = any(getattr(FLAGS, name) for name in CONDITIONAL_FLAGS)
  name = output_name('conditional' if conditional else 'samples', step, config, nfe, inputs)
  stem = reporting.output_stem(outdir, name, ('.npz', '.png'))
  if conditional:
    written = write_conditional(config, samples, used, stem)
    what = f'{num} conditional samples'
  else:
    np.savez_compressed(plotting.ensure_dir(stem + '.npz'), samples=samples)
    written = [stem + '.npz']
    if config.data.image_size is None:
      written += plot_2d(config, sde, model, params, samples, stem, rng)
    else:
      written.append(plotting.save_samples_picture(config, samples, stem + '.png'))
      if len(samples) > plotting.GRID_IMAGES:
        written[-1] += f' (the first {plotting.GRID_IMAGES} of {len(samples)})'
    what = f'{len(samples)} samples with {config.sampling.method}'
  print(f'{what} ({nfe} NFE per sample batch) in {wall:.1f}s including compilation, from step '
        f'{step}.')
  for path in written:
    print(f'Wrote {path}')


def load_unet_weights(path: str, model):
  """--unet_weights (a diffusers safetensors file, or the folder holding it) as ``model``'s
  parameters; a file of another architecture fails naming its keys."""
  if not isinstance(model, unet_condition.UNet2DConditionModel):
    raise ConfigError("--unet_weights reads a diffusers UNet2DConditionModel: it needs "
                      "model.name='unet_condition' with model.precond='paper' (the eps network).")
  file = os.path.join(path, convert_unet.WEIGHTS_FILE) if os.path.isdir(path) else path
  state = torch_weights.read_safetensors(file, convert_unet.HOW_TO_GET)
  return convert_unet.convert_state_dict(state, model, what=path)


def output_name(kind: str, step: int, config, nfe: int, inputs: dict) -> str:
  """What made the samples: ``<kind>_step<step>_<method>[_<inputs>]_nfe<NFE>_seed<seed>[_<tag>]``
  (inpainting and colorization name their PC sampler; guidance and autoguidance their scale)."""
  s = config.sampling
  parts = [kind, f'step{step}']
  if 'image' in inputs:
    parts.append('inpaint' + (f'-{FLAGS.inpaint_mask.replace(":", "")}'
                              if masks.is_builtin(FLAGS.inpaint_mask) else ''))
  elif 'grey' in inputs:
    parts.append('colorize')
  else:
    parts.append(s.method)
  if 'labels' in inputs:
    parts.append(f'cls{s.classifier_scale:g}' if FLAGS.classifier_workdir
                 else f'w{s.guidance_scale:g}')
  if 'context' in inputs:
    parts.append(f'prompt-w{s.guidance_scale:g}')
  if s.autoguidance_workdir is not None:
    interval = (s.autoguidance_sigma_min, s.autoguidance_sigma_max)
    parts.append(f'autoguided{s.autoguidance_scale:g}' + (
        '' if interval == (0.0, float('inf')) else f'-sigma{interval[0]:g}-{interval[1]:g}'))
  parts += [f'nfe{nfe}', f'seed{FLAGS.seed}'] + ([FLAGS.tag] if FLAGS.tag else [])
  return '_'.join(parts)


def write_conditional(config, samples, used, stem: str) -> list[str]:
  """``<stem>.npz`` (samples and the inputs each was drawn with) and ``<stem>.png``: 2-D samples
  coloured by label; images one row per class (labels) or prompt, or one row per example as
  masked input | completion | original (inpainting) or grey input | colorization."""
  if 'context' in used:   # the prompts, not their (N, 77, 768) states
    index = np.arange(len(samples)) % len(FLAGS.prompt)
    used = {'prompts': np.asarray(FLAGS.prompt), 'prompt_index': index}
  npz = plotting.ensure_dir(stem + '.npz')
  np.savez_compressed(npz, samples=samples, **used)
  png = stem + '.png'
  s = config.sampling
  title = (f'labels, w={s.guidance_scale:g}' if 'labels' in used and not FLAGS.classifier_workdir
           else f'labels, classifier scale {s.classifier_scale:g}' if 'labels' in used else '')
  if config.data.image_size is None:
    labels = used.get('labels', np.zeros(len(samples), np.int32))
    return [npz, plotting.scatter_by_label(samples, labels, png, title=title)]
  to_01 = datasets.get_data_inverse_scaler(config)
  images = np.asarray(to_01(samples))
  observed = used.get('image', used.get('grey'))
  if observed is not None:
    shown = plotting.completion_rows(np.asarray(to_01(observed)), images, png,
                                     mask=used.get('mask'))
    return [npz, shown + (f' (the first {plotting.COMPLETION_ROWS} of {len(images)})'
                          if len(images) > plotting.COMPLETION_ROWS else '')]
  return [npz, plotting.class_grid(images, used.get('labels', used.get('prompt_index')), png)]


def run():
  """The ``score-sde-sample`` command."""
  cli.run(main)


if __name__ == '__main__':
  run()
