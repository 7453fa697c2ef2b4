"""PyTorch state dicts <-> Flax parameter trees of networks whose Flax names mirror PyTorch's.

A Flax path joins a PyTorch list index to the module name before it with '_'
(``blocks.3.attn.qkv.weight`` <-> ``blocks_3/attn/qkv/kernel``); the leaf names and layouts differ:

  Flax ``kernel`` (kh, kw, I, O) of a convolution  <->  ``weight`` (O, I, kh, kw)
  Flax ``kernel`` (I, O) of a dense layer           <->  ``weight`` (O, I)
  Flax ``scale`` of a norm, ``embedding`` of a table <->  ``weight`` (same layout)
  ``bias``                                          <->  ``bias``

A converted network is one ``.npz``: its parameters (``params/blocks_0/attn/qkv/kernel``, ...)
and its module's fields as JSON (``__config__``), written by ``save_npz`` and read by ``load_npz``.

Used by the converters of diffusers' ``AutoencoderKL`` and facebookresearch/DiT weights. Reading a
``.safetensors`` file needs only the ``safetensors`` package's numpy API (no torch).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import flax
import numpy as np

from score_sde import reporting
from score_sde.errors import DataError, MissingDependencyError, MissingFileError

_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'embedding': 'weight', 'bias': 'bias'}
_INDEX = re.compile(r'^(.*)_(\d+)$')
_SHOWN = 4  # names listed per kind in a mismatch message


def torch_key(path: tuple[str, ...]) -> str:
  """('blocks_3', 'attn', 'qkv', 'kernel') -> 'blocks.3.attn.qkv.weight'."""
  *modules, leaf = path
  parts = []
  for name in modules:
    match = _INDEX.match(name)
    parts.extend(match.groups() if match else (name,))
  return '.'.join(parts + [_LEAVES[leaf]])


def to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
  """A Flax leaf's array in PyTorch's layout."""
  if leaf != 'kernel':
    return value
  return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T


def from_torch_layout(leaf: str, value: np.ndarray, target_ndim: int) -> np.ndarray:
  """A PyTorch array in the layout of a Flax leaf with ``target_ndim`` dimensions. A 1x1
  convolution stored where a dense layer is expected (the LDM code's attention) is squeezed."""
  if leaf != 'kernel':
    return value
  if target_ndim == 2 and value.ndim == 4 and value.shape[2:] == (1, 1):
    value = value[:, :, 0, 0]
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T


def _listing(names) -> str:
  names = sorted(names)
  more = f', ... ({len(names) - _SHOWN} more)' if len(names) > _SHOWN else ''
  return ', '.join(names[:_SHOWN]) + more


def state_dict_to_params(state_dict: Mapping[str, np.ndarray], shapes: Any, what: str) -> dict:
  """PyTorch ``state_dict`` (numpy values) -> a Flax params tree shaped like ``shapes`` (a tree of
  arrays or ``jax.ShapeDtypeStruct``s, e.g. from ``jax.eval_shape``), float32.

  Raises a one-line ``DataError`` naming the missing and unexpected keys (the first few of each,
  with their counts), or the first key whose shape differs; ``what`` names the source.
  """
  expected = {torch_key(path): (path, tuple(leaf.shape))
              for path, leaf in flax.traverse_util.flatten_dict(shapes).items()}
  missing, unexpected = set(expected) - set(state_dict), set(state_dict) - set(expected)
  if missing or unexpected:
    parts = [f'{len(missing)} missing ({_listing(missing)})' if missing else '',
             f'{len(unexpected)} unexpected ({_listing(unexpected)})' if unexpected else '']
    raise DataError(f'{what} does not fit this architecture: '
                    f'{"; ".join(p for p in parts if p)}.')
  flat = {}
  for key, (path, shape) in expected.items():
    value = from_torch_layout(path[-1], np.asarray(state_dict[key], np.float32), len(shape))
    if value.shape != shape:
      raise DataError(f'{what}: {key} has shape {tuple(np.shape(state_dict[key]))}, this '
                      f'architecture needs {shape} (Flax layout); check the model size settings.')
    flat[path] = np.ascontiguousarray(value)
  return flax.traverse_util.unflatten_dict(flat)


def params_to_state_dict(params: Any) -> dict[str, np.ndarray]:
  """A Flax params tree -> PyTorch-named, PyTorch-laid-out float32 numpy arrays."""
  return {torch_key(path): np.ascontiguousarray(to_torch_layout(path[-1], np.asarray(v)))
          for path, v in flax.traverse_util.flatten_dict(params).items()}


def read_safetensors(path: str, how_to_get: str) -> dict[str, np.ndarray]:
  """All tensors of a ``.safetensors`` file as numpy arrays. ``how_to_get`` completes the
  one-line message when the file is missing."""
  if not os.path.isfile(path):
    raise MissingFileError(f'{path!r} does not exist; {how_to_get}')
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except Exception as e:  # safetensors raises its own SafetensorError / OSError types
    raise DataError(f'{path!r} is not a readable .safetensors file ({e}).') from e


def read_torch(path: str, how_to_get: str) -> Any:
  """A ``torch.save``d object (weights only) with every tensor as a float32 numpy array. Imports
  torch here, with a one-line message naming the install when it is absent."""
  if not os.path.isfile(path):
    raise MissingFileError(f'{path!r} does not exist; {how_to_get}')
  try:
    import torch
  except ImportError as e:
    raise MissingDependencyError(
        f'Reading {os.path.basename(path)} needs torch, only for this one-time conversion: `pip '
        "install torch` or `pip install -e '.[torch]'` (the CPU build is enough).") from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  return _tree_to_numpy(state)


def _tree_to_numpy(obj):
  if isinstance(obj, dict):
    return {k: _tree_to_numpy(v) for k, v in obj.items()}
  return obj.detach().float().numpy() if hasattr(obj, 'detach') else obj


def save_npz(dst: str, fields: Mapping[str, Any], params: Any) -> None:
  """One ``.npz`` with ``params`` and the module's ``fields`` (JSON); written atomically."""
  arrays = {'params/' + '/'.join(k): np.asarray(v)
            for k, v in flax.traverse_util.flatten_dict(params).items()}
  reporting.write_npz(dst, __config__=np.array(json.dumps(dict(fields))), **arrays)


def load_npz(path: str, how_to_get: str) -> tuple[dict, dict]:
  """(fields, params) of a ``save_npz`` file; lists come back as tuples."""
  if not os.path.isfile(path):
    raise MissingFileError(f'{path!r} does not exist; {how_to_get}')
  with np.load(path, allow_pickle=False) as data:
    if '__config__' not in data:
      raise DataError(f'{path!r} is not a converted network (no __config__ entry); {how_to_get}')
    fields = {k: tuple(v) if isinstance(v, list) else v
              for k, v in json.loads(str(data['__config__'])).items()}
    flat = {tuple(k.split('/')[1:]): data[k] for k in data.files if k.startswith('params/')}
  return fields, flax.traverse_util.unflatten_dict(flat)
