"""Cross-attention to a context in DiT (``model.context_dim``, PixArt-alpha's layer): DiT's
parameters are untouched without it; with it, a zero-initialised layer per block that leaves the
initial network the context-free one, and classifier-free guidance at w = 0 is the conditional
score."""
import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib
from score_sde.models import dit
from score_sde.models import utils as mutils
from score_sde.sampling import guidance
from tests.helpers import assert_zero_output_is_context_free, random_params

B, L, D = 2, 3, 6
TINY = dict(patch_size=2, in_channels=1, hidden_size=16, depth=2, num_heads=2, num_classes=None,
            learn_sigma=False)
X = jax.random.normal(jax.random.PRNGKey(1), (B, 8, 8, 1))
T = jnp.full((B,), 400.0)


def _context(seed):
  return np.random.default_rng(seed).standard_normal((B, L, D)).astype(np.float32)


def _paths(tree):
  return {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _without_cross(params):
  return {k: ({b: v for b, v in block.items() if b != 'cross_attn'} if k.startswith('blocks')
              else block) for k, block in params.items()}


def _with_proj(params, make):
  """``params`` with every block's cross-attention output projection replaced by ``make(leaf)``."""
  return jax.tree_util.tree_map_with_path(
      lambda p, v: make(v) if 'cross_attn' in (k := jax.tree_util.keystr(p)) and 'proj' in k
      else v, params)


def test_dit_cross_attention_is_zero_at_init_and_then_reads_the_context():
  plain, model = dit.DiT(**TINY), dit.DiT(**TINY, context_dim=D, context_length=L)
  assert mutils.context_shape(plain) is None and mutils.context_shape(model) == (L, D)
  init = jax.jit(model.init)(jax.random.PRNGKey(0), X, T, context=_context(0))['params']
  assert {k for k in init['blocks_0']} == {'adaLN_modulation_1', 'attn', 'cross_attn', 'mlp'}
  assert not any(np.any(v) for v in jax.tree.leaves(init['blocks_1']['cross_attn']['proj']))
  plain_shapes = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), X, T)['params'])
  assert _paths(plain_shapes) == _paths(_without_cross(init))
  # Random weights (adaLN-Zero would make every output 0) but a zero output projection: the
  # context-free network; with the projection random too, the output reads the context.
  noisy = random_params(jax.eval_shape(lambda: init))
  at_init = _with_proj(noisy, jnp.zeros_like)
  out = jax.jit(lambda p, c: model.apply({'params': p}, X, T, context=c))
  assert_zero_output_is_context_free(out, at_init, noisy, [_context(2), _context(3)],
                                     plain.apply({'params': _without_cross(noisy)}, X, T))
  # Guidance at w = 0 through get_score_fn with the context: the conditional score.
  sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
  score = guidance.model_context_score_fn(sde, model, noisy)
  t = jnp.full((B,), 0.4)
  context = _context(4)
  guided = guidance.context_free_score_fn(score, sde, context, np.zeros((L, D)), 0.0)(X, t)
  assert guided.shape == X.shape
  np.testing.assert_allclose(guided, score(X, t, jnp.asarray(context)), rtol=1e-5, atol=1e-5)
