"""Sample from a trained model: python sample.py --workdir=runs/spiral [--config=...]

The program is ``score_sde/apps/sample.py`` (installed as ``score-sde-sample``); see its
docstring or ``--helpshort``.
"""
from score_sde.apps.sample import check_guidance_settings, main, restore_ema_params, run  # noqa: F401

if __name__ == '__main__':
  run()
