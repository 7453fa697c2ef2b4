"""Train a score model: ``score-sde-train --config=configs/vp/toy_spiral.py --workdir=runs/spiral``
(or ``train.py``).

Any config field can be overridden, e.g. --config.training.n_iters=2000. Given the --workdir of
a run that has started, its stored config is the default --config (resume or evaluate with
``--workdir`` alone). ``--mode=eval`` evaluates the checkpoints in the workdir (loss, bits/dim,
samples; results in ``--eval_folder``, default ``<workdir>/eval``) instead of training;
``--mode=train_classifier`` trains the noise-conditional classifier of classifier guidance;
``--mode=train_autoencoder`` the KL autoencoder of latent diffusion (``config.autoencoder``);
``--mode=train_contrastive`` the CLIP-style text and image encoders of unCLIP
(``config.contrastive``).
Errors in the config or the command line are one line on stderr (``--traceback`` for the stack).
"""
from absl import flags
from ml_collections import config_flags

from score_sde import cli, config_checks, stop_signals, training

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Training configuration file (default: the one '
                                'stored in --workdir).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs and samples.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'train_classifier', 'train_autoencoder',
                                    'train_contrastive'],
                  'Train, evaluate saved checkpoints, train the guidance classifier, the '
                  'autoencoder of latent diffusion or the contrastive encoders of unCLIP.')
flags.DEFINE_string('eval_folder', 'eval', '--mode=eval: where results go, relative to --workdir '
                    '(or absolute).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  if FLAGS.mode == 'train':
    config_checks.check_training_overrides(
        FLAGS.config, {**config_flags.get_override_values(FLAGS['config']), **cli.none_overrides()})
    training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == 'train_classifier':
    from score_sde import classifier_training
    classifier_training.train_classifier(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == 'train_autoencoder':
    from score_sde import autoencoder_training
    autoencoder_training.train_autoencoder(FLAGS.config, FLAGS.workdir)
  elif FLAGS.mode == 'train_contrastive':
    from score_sde import contrastive_training
    contrastive_training.train_contrastive(FLAGS.config, FLAGS.workdir)
  else:
    stop_signals.release()   # evaluation resumes where it stopped: a signal may end it at once
    from score_sde import evaluation
    config_checks.check(FLAGS.config, 'eval')
    evaluation.evaluate(FLAGS.config, FLAGS.workdir, eval_folder=FLAGS.eval_folder)


def run():
  """The ``score-sde-train`` command (``train.py`` installs the stop signals before its imports;
  installing twice is harmless)."""
  stop_signals.install()
  cli.run(main)


if __name__ == '__main__':
  run()
