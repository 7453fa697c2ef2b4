"""Sample from a trained model: python sample.py --config=configs/vp/toy_spiral.py --workdir=runs/spiral

Restores the EMA parameters of the latest (or ``--step``) checkpoint, runs the sampler of
``config.sampling`` (override with e.g. ``--config.sampling.method=ode``) on all local devices,
and writes ``samples_<step>.npz`` and a PNG (an image grid; for 2-D data a scatter plot over the
data and a picture of the learned score field with probability-flow ODE paths). The sampler
settings are checked, and the config compared with the one stored in the checkpoint, before
anything is restored; errors are one line on stderr (``--traceback`` for the stack).

Conditional sampling (score_sde/conditional_sampling.py): ``--labels=0,1`` (classifier-free
guidance with ``--config.sampling.guidance_scale``, ``guidance_sigma_min/max``; or classifier
guidance with ``--classifier_workdir``), ``--inpaint_image`` + ``--inpaint_mask``,
``--colorize_image``; they write ``conditional_<step>.{npz,png}``.
"""
import os
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from score_sde import checkpointing, checkpoints, cli, conditional_sampling, config_checks
from score_sde import datasets, errors, generation, models, parallel, plotting, sde_lib
from score_sde import training
from score_sde.models import utils as mutils

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'The config the model was trained with.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Training workdir holding checkpoints/ (outputs go there too).')
flags.DEFINE_integer('step', None, 'Checkpoint step to restore (default: the latest).')
flags.DEFINE_string('paper_checkpoint', None,
                    "A checkpoint file (or checkpoints/ folder) of the paper's code "
                    '(yang-song/score_sde); its EMA parameters are sampled instead of --workdir\'s.')
flags.DEFINE_integer('num_samples', None,
                     'Number of samples, >= 1 (default: config.sampling.batch_size).',
                     lower_bound=1)
flags.DEFINE_string('outdir', None, 'Where to write samples (default: <workdir>/samples).')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.DEFINE_string('labels', None, "Class labels to sample, cycled: '3', '0,1,2' or 'all'.")
flags.DEFINE_string('classifier_workdir', None, 'Guide --labels with the classifier trained there '
                    '(train.py --mode=train_classifier) instead of classifier-free guidance.')
flags.DEFINE_string('inpaint_image', None,
                    'Observed images (.npy/.npz in the model range, or PNG).')
flags.DEFINE_string('inpaint_mask', None,
                    'Mask for --inpaint_image: 1 = observed (.npy/.npz/PNG).')
flags.DEFINE_string('colorize_image', None, 'Grey images to colorize (.npy/.npz, or PNG).')
flags.mark_flags_as_required(['config', 'workdir'])


def restore_ema_params(config, workdir, step=None):
  """(step, EMA parameters) of a checkpoint trained with ``config``."""
  if not os.path.isdir(workdir):
    raise errors.MissingFileError(f'--workdir {workdir} does not exist.')
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  ckpt.check_config(config, step)   # another run's config: stop before building anything
  model = models.get_model(config)
  optimizer = training.get_optimizer(config.optim)
  template = training.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))
  state, _ = ckpt.restore(template, step)
  ckpt.close()
  return int(state.step), state.ema_params


def plot_2d(config, sde, model, params, samples, outdir, step, rng):
  """Samples over the data, and the learned score field with a few probability-flow paths."""
  data = np.asarray(next(datasets.get_dataset(config, 'test', num_local_devices=1,
                                              batch_size=len(samples)))['image'][0])
  scatter = plotting.scatter_2d(samples, os.path.join(outdir, f'samples_{step}.png'), data=data,
                                title=f'{config.data.dataset}, {config.training.sde}, step {step}')
  score_fn = jax.jit(mutils.get_score_fn(sde, model, params, continuous=config.training.continuous))
  x_T = sde.prior_sampling(rng, (12, 2))
  paths, times = generation.reverse_sde_paths(rng, score_fn, sde, x_T)
  field = plotting.score_field(score_fn, [1.0, 0.5, 0.1, 0.01], os.path.join(
      outdir, f'score_field_{step}.png'), trajectories=paths, trajectory_times=times,
      lim=plotting.extent(data), data=data)
  return [scatter, field]


def main(argv):
  del argv
  config = FLAGS.config
  config_checks.check(config, 'sample')
  config_checks.check_sampling_overrides(config, config_flags.get_override_values(FLAGS['config']))
  conditional_sampling.check_guidance_settings(config, FLAGS)
  sde = sde_lib.get_sde(config)
  model = models.get_model(config)
  if FLAGS.paper_checkpoint:
    paper = checkpoints.load_paper_checkpoint(FLAGS.paper_checkpoint, config)
    step, params = paper.step, paper.ema_params
  else:
    step, params = restore_ema_params(config, FLAGS.workdir, FLAGS.step)
  num = config.sampling.batch_size if FLAGS.num_samples is None else FLAGS.num_samples
  if conditional_sampling.requested(FLAGS):   # labels, guidance, inpainting, colorization
    return conditional_sampling.run(config, FLAGS, sde, model, params, step, num,
                                    FLAGS.outdir or os.path.join(FLAGS.workdir, 'samples'))
  devices = jax.local_devices()
  per_device = parallel.per_device_batch_size(config.sampling.batch_size, len(devices))
  sample_fn = generation.get_sample_fn(config, sde, model, per_device, devices)
  p_params = parallel.replicate(params, devices)
  rng = jax.random.PRNGKey(FLAGS.seed)
  # First call compiles; time the sampling itself on the rest.
  t0 = time.time()
  samples, nfe = generation.draw_samples(sample_fn, p_params, rng, num, per_device * len(devices))
  wall = time.time() - t0
  outdir = FLAGS.outdir or os.path.join(FLAGS.workdir, 'samples')
  os.makedirs(outdir, exist_ok=True)
  np.savez_compressed(os.path.join(outdir, f'samples_{step}.npz'), samples=samples)
  if config.data.image_size is None:
    written = plot_2d(config, sde, model, params, samples, outdir, step, rng)
  else:
    written = [training.save_samples_picture(config, samples,
                                             os.path.join(outdir, f'samples_{step}.png'))]
  print(f'{len(samples)} samples with {config.sampling.method} ({nfe} NFE per sample batch) in '
        f'{wall:.1f}s including compilation, from step {step}.')
  for path in written:
    print(f'Wrote {path}')


if __name__ == '__main__':
  cli.run(main)
