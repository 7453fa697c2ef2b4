"""One-time conversion of pytorch-fid's FID Inception weights to this project's ``.npz``.

    python -m score_sde.evaluation.convert_inception \\
        --src pt_inception-2015-12-05-6726825d.pth --dst inception_fid.npz

Reading the ``.pth`` needs torch (``pip install torch``; CPU is enough), used here only; the
result is read by ``inception.load_variables`` with numpy alone. The mapping is a renaming plus
layout changes: conv ``weight`` (O, I, kh, kw) -> ``conv/kernel`` (kh, kw, I, O); batch norm
``weight/bias/running_mean/running_var`` -> ``bn/scale/bias`` (params) and ``bn/mean/var``
(batch_stats); ``fc.weight`` (1008, 2048) -> ``fc/kernel`` (2048, 1008).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping

import numpy as np

from score_sde import reporting
from score_sde.errors import DataError, MissingDependencyError, MissingFileError, ScoreSDEError
from score_sde.evaluation import inception

# torch suffix -> (collection, flax leaf name, array transform).
_LEAVES = {
    'conv.weight': ('params', 'kernel', lambda w: w.transpose(2, 3, 1, 0)),
    'bn.weight': ('params', 'scale', lambda w: w),
    'bn.bias': ('params', 'bias', lambda w: w),
    'bn.running_mean': ('batch_stats', 'mean', lambda w: w),
    'bn.running_var': ('batch_stats', 'var', lambda w: w),
    'fc.weight': ('params', 'kernel', lambda w: w.T),
    'fc.bias': ('params', 'bias', lambda w: w),
}
_IGNORED = ('num_batches_tracked',)


def flax_key(torch_key: str) -> tuple[str, tuple[str, ...], str] | None:
  """'Mixed_6b.branch7x7_2.bn.running_var' -> ('batch_stats', ('Mixed_6b', 'branch7x7_2',
  'bn'), 'mean'|...), or None for bookkeeping entries (num_batches_tracked)."""
  if torch_key.endswith(_IGNORED):
    return None
  parts = torch_key.split('.')
  suffix = '.'.join(parts[-2:])
  if suffix not in _LEAVES:
    raise DataError(f'Unexpected entry {torch_key!r} in the Inception state dict; is this '
                    f"pytorch-fid's {inception.WEIGHTS_FILE}?")
  return _LEAVES[suffix][0], tuple(parts[:-1]), _LEAVES[suffix][1]


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """pytorch-fid state dict (numpy values) -> flat {'params/Mixed_5b/branch1x1/conv/kernel': ...}
  float32 arrays, checked against the Flax network's variable shapes."""
  flat, names = {}, {}
  for key, value in state_dict.items():
    target = flax_key(key)
    if target is None:
      continue
    collection, path, leaf = target
    transform = _LEAVES['.'.join(key.split('.')[-2:])][2]
    flat[(collection,) + path + (leaf,)] = np.ascontiguousarray(
        transform(np.asarray(value, np.float32)))
    names[(collection,) + path + (leaf,)] = f'{key} {tuple(np.shape(value))}'
  inception.check_variable_shapes(flat, 'The state dict', names)
  return {'/'.join(k): v for k, v in flat.items()}


def load_torch_state_dict(src: str) -> dict[str, np.ndarray]:
  """The ``.pth`` state dict as numpy arrays (imports torch here, with a clear message)."""
  if not os.path.isfile(src):
    raise MissingFileError(f'{src!r} does not exist; download {inception.WEIGHTS_URL}')
  try:
    import torch
  except ImportError as e:
    raise MissingDependencyError(
        'Converting the .pth weights needs torch, only for this one-time step: `pip install '
        "torch` or `pip install -e '.[torch]'` (the CPU build is enough), in any environment "
        'with this package.') from e
  state_dict = torch.load(src, map_location='cpu', weights_only=True)
  return {k: v.detach().cpu().numpy() for k, v in state_dict.items()}


def convert(src: str, dst: str) -> None:
  """Convert ``src`` (.pth) to ``dst`` (.npz); ``dst`` is written atomically, never half."""
  reporting.write_npz(dst, **convert_state_dict(load_torch_state_dict(src)))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--src', default=inception.WEIGHTS_FILE,
                      help="pytorch-fid's FID Inception state dict (.pth)")
  parser.add_argument('--dst', default='inception_fid.npz', help='the converted weights (.npz)')
  args = parser.parse_args(argv)
  try:
    convert(args.src, args.dst)
  except (ScoreSDEError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'Wrote {args.dst}; set --config.eval.inception_weights={args.dst}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
