"""Train a score model: python train.py --config=configs/vp/toy_spiral.py --workdir=runs/spiral

Any config field can be overridden, e.g. --config.training.n_iters=2000. ``--mode=eval``
evaluates the checkpoints in the workdir (loss, bits/dim, samples) instead of training;
``--mode=train_classifier`` trains the noise-conditional classifier of classifier guidance;
``--mode=train_autoencoder`` the KL autoencoder of latent diffusion (``config.autoencoder``).
Errors in the config or the command line are one line on stderr (``--traceback`` for the stack).
"""
from score_sde import stop_signals

if __name__ == '__main__':
  stop_signals.install()   # first: a SIGTERM while JAX is imported below stops the run cleanly

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from score_sde import cli, config_checks, training  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs and samples.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'train_classifier', 'train_autoencoder'],
                  'Train, evaluate saved checkpoints, train the guidance classifier or the '
                  'autoencoder of latent diffusion.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if FLAGS.mode == 'train':
    config_checks.check_training_overrides(FLAGS.config,
                                           config_flags.get_override_values(FLAGS['config']))
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == 'train_classifier':
    from score_sde import classifier_training
    classifier_training.train_classifier(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == 'train_autoencoder':
    from score_sde import autoencoder_training
    autoencoder_training.train_autoencoder(FLAGS.config, FLAGS.workdir)
  else:
    stop_signals.release()   # evaluation resumes where it stopped: a signal may end it at once
    from score_sde import evaluation
    config_checks.check(FLAGS.config, 'eval')
    evaluation.evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main)
