"""score_sde: score-based generative modeling through SDEs, in JAX/Flax."""
__version__ = '0.1.0'
