"""Train a score model: python train.py --config=configs/vp/toy_spiral.py --workdir=runs/spiral

Any config field can be overridden, e.g. --config.training.n_iters=2000. ``--mode=eval``
evaluates the checkpoints in the workdir (loss, bits/dim) instead of training.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from score_sde import compilation_cache, training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs and samples.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'Train, or evaluate saved checkpoints.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  compilation_cache.enable()   # SCORE_SDE_CACHE_DIR=0 turns it off
  if FLAGS.mode == 'train':
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  else:
    from score_sde import evaluation
    evaluation.evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
