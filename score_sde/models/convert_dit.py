"""facebookresearch/DiT weights -> this project's DiT (``models.dit``).

    python -m score_sde.models.convert_dit --src DiT-XL-2-256x256.pt --dst dit_xl_2.npz

``--src`` is a DiT state dict: the released ``.pt`` files (reading them needs torch, only for this
step: ``pip install torch``) or a ``.safetensors`` file (numpy only); a training checkpoint's
``ema`` (else ``model``) entry is used. The architecture is read from the weights: patch size,
channels, width, depth, MLP ratio, classes (the table's last row is the null class) and
learn_sigma; the number of heads is the paper's for its width (S 6, B 12, L 16, XL 16) unless
``--num_heads`` says otherwise. The fixed ``pos_embed`` is checked against ours and dropped (ours
is computed from the input size). The result is one ``.npz`` (parameters + the module's fields).
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import DataError, ScoreSDEError
from score_sde.models import dit, torch_weights

HOW_TO_GET = ('download a DiT checkpoint (e.g. DiT-XL-2-256x256.pt, see facebookresearch/DiT) and '
              'run `python -m score_sde.models.convert_dit --src FILE --dst dit.npz`.')
_FIELDS = ('patch_size', 'in_channels', 'hidden_size', 'depth', 'num_heads', 'mlp_ratio',
           'num_classes', 'learn_sigma')
_HEADS = {width: heads for _, width, heads in dit.SIZES.values()}


def read_state_dict(src: str) -> dict[str, np.ndarray]:
  """A DiT state dict as numpy arrays from ``.safetensors`` or a torch ``.pt`` file."""
  if src.endswith('.safetensors'):
    return torch_weights.read_safetensors(src, HOW_TO_GET)
  state = torch_weights.read_torch(src, HOW_TO_GET)
  for key in ('ema', 'model'):  # a training checkpoint of DiT's train.py
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
      state = state[key]
      break
  return state


def _get(state_dict, key, what):
  if key not in state_dict:
    raise DataError(f'{what} has no {key}: not a DiT state dict; {HOW_TO_GET}')
  return np.shape(state_dict[key])


def fields_from_state_dict(state_dict: Mapping[str, np.ndarray], num_heads: int | None = None,
                           what: str = 'The state dict') -> dict:
  """DiT's constructor arguments, read from the shapes of its state dict."""
  hidden, in_channels, patch, _ = _get(state_dict, 'x_embedder.proj.weight', what)
  depth = len({m.group(1) for k in state_dict if (m := re.match(r'blocks\.(\d+)\.', k))})
  mlp_hidden = _get(state_dict, 'blocks.0.mlp.fc1.weight', what)[0]
  out = _get(state_dict, 'final_layer.linear.weight', what)[0] // (patch * patch)
  table = state_dict.get('y_embedder.embedding_table.weight')
  if num_heads is None and hidden not in _HEADS:
    raise DataError(f"{what}: width {hidden} is none of the paper's DiT sizes {sorted(_HEADS)}; "
                    'pass --num_heads.')
  return dict(patch_size=patch, in_channels=in_channels, hidden_size=hidden, depth=depth,
              num_heads=num_heads or _HEADS[hidden], mlp_ratio=mlp_hidden / hidden,
              num_classes=None if table is None else np.shape(table)[0] - 1,
              learn_sigma=bool(out == 2 * in_channels))


def param_shapes(model: dit.DiT) -> Any:
  """The params tree of ``model`` as ShapeDtypeStructs (nothing is computed)."""
  x = jnp.zeros((1, model.patch_size, model.patch_size, model.in_channels))
  labels = jnp.zeros((1,))
  kwargs = {'class_labels': jnp.zeros((1,), jnp.int32)} if model.num_classes else {}
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, labels, **kwargs))['params']


def check_pos_embed(pos_embed: np.ndarray, hidden: int, what: str) -> None:
  """DiT's stored sin-cos table must be the one ``dit.pos_embed_2d`` computes."""
  tokens = pos_embed.reshape(-1, hidden).shape[0]
  grid = int(round(tokens**0.5))
  ours = dit.pos_embed_2d(hidden, grid, grid)
  if grid * grid != tokens or np.max(np.abs(pos_embed.reshape(tokens, hidden) - ours)) > 1e-4:
    raise DataError(f'{what}: its pos_embed is not the 2-D sin-cos table of a {grid}x{grid} grid.')


def convert_state_dict(state_dict: Mapping[str, np.ndarray], model: dit.DiT,
                       what: str = 'The state dict') -> dict:
  """A DiT state dict (numpy) -> params of ``model``; missing/unexpected keys named."""
  state_dict = dict(state_dict)
  if 'pos_embed' in state_dict:
    check_pos_embed(np.asarray(state_dict.pop('pos_embed')), model.hidden_size, what)
  return torch_weights.state_dict_to_params(state_dict, param_shapes(model), what)


def load(path: str, num_heads: int | None = None) -> tuple[dit.DiT, dict]:
  """(module, params) from a converted ``.npz`` or a DiT ``.pt`` / ``.safetensors`` file."""
  if path.endswith('.npz'):
    fields, params = torch_weights.load_npz(path, HOW_TO_GET)
    model = dit.DiT(**fields)
    return model, convert_state_dict(torch_weights.params_to_state_dict(params), model, repr(path))
  state_dict = read_state_dict(path)
  model = dit.DiT(**fields_from_state_dict(state_dict, num_heads, repr(path)))
  return model, convert_state_dict(state_dict, model, repr(path))


def save(dst: str, model: dit.DiT, params: Any) -> None:
  torch_weights.save_npz(dst, {k: getattr(model, k) for k in _FIELDS}, params)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src', required=True, help='a DiT state dict (.pt or .safetensors)')
  parser.add_argument('--dst', required=True, help='the converted DiT (.npz)')
  parser.add_argument('--num_heads', type=int, default=None,
                      help="attention heads (default: the paper's for the width)")
  args = parser.parse_args(argv)
  try:
    model, params = load(args.src, args.num_heads)
    save(args.dst, model, params)
  except ScoreSDEError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  n = sum(np.size(v) for v in jax.tree.leaves(params))
  print(f'Wrote {args.dst}: DiT depth {model.depth}, width {model.hidden_size}, patch '
        f'{model.patch_size}, {n:,} parameters.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
