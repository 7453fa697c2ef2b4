"""Train a score model: python train.py --config=configs/vp/toy_spiral.py --workdir=runs/spiral

The program is ``score_sde/apps/train.py`` (installed as ``score-sde-train``); see its docstring
or ``--helpshort``.
"""
from score_sde import stop_signals

if __name__ == '__main__':
  stop_signals.install()   # first: a SIGTERM while JAX is imported below stops the run cleanly

from score_sde.apps.train import main, run  # noqa: E402,F401

if __name__ == '__main__':
  run()
