"""``score-sde-experiments`` or ``python -m score_sde.experiments --spec=configs/experiments/<spec>.py --workdir=<dir>``
(``--report_only``: tabulate and plot the cells finished so far)."""
from absl import flags
from ml_collections import config_flags

from score_sde import cli
from score_sde.experiments import runner


def main(argv):
  del argv
  if flags.FLAGS.dry_run:
    runner.dry_run(flags.FLAGS.spec)
  else:
    (runner.report if flags.FLAGS.report_only else runner.run)(flags.FLAGS.spec,
                                                               flags.FLAGS.workdir)


def run():
  """The ``score-sde-experiments`` command (its flags are defined here, not at import)."""
  config_flags.DEFINE_config_file('spec', None, 'Experiment spec file (configs/experiments/).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for models, cells, tables and plots.')
  flags.DEFINE_bool('report_only', False, 'Only tabulate and plot the cells finished so far.')
  flags.DEFINE_bool('dry_run', False, 'Only print the plan and its cost (models, cells, samples, '
                    'NFE); nothing is trained or written.')
  flags.mark_flags_as_required(['spec', 'workdir'])
  cli.run(main)


if __name__ == '__main__':
  run()
