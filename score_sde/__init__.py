"""score_sde: score-based generative modeling through SDEs, in JAX/Flax.

``score_sde.load(workdir)`` returns a trained run (``score_sde.api.Run``): its config, EMA
parameters, SDE, score function, ``sample`` and ``likelihood``. It is imported on first use, so
``import score_sde`` stays light.
"""
__version__ = '0.1.0'

_API = ('load', 'Run', 'Samples', 'Likelihood')


def __getattr__(name):
  if name in _API:
    from score_sde import api
    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
