"""The Flax DiT computes facebookresearch/DiT's function: a reference check (needs torch, timm).

DiT's own ``models.py`` is loaded at run time from a checkout (``--dit=DIR``, or extracted from
the bare mirror ``--dit_git`` with ``git archive``), never copied here. For each variant its
model is built with random weights (every weight drawn at the scale of its fan-in, the adaLN and
final layers included: DiT's zero initialisation would make every output 0), its state dict
written as ``.safetensors`` and read back by this project's converter (``convert_dit.load``:
architecture inferred from the shapes, the fixed pos_embed checked against ours), and both
networks see the same latents, timesteps and class labels (the null class among them). Reported:
parameter counts (DiT's ``model.parameters()`` includes its fixed pos_embed, which we compute
instead of storing), and the relative error max|flax - torch| / max|torch| of the full output
(eps and learned-variance channels), with torch float64 beside it where memory allows.

Not a CI test: torch stays out of the project's environment. Run in the verification venv (torch,
timm, safetensors, jax and this package), from the repository root:

  JAX_PLATFORMS=cpu PYTHONPATH=$PWD /work/torchenv/bin/python benchmarks/dit_reference.py \
      [--dit=DIR | --dit_git=/work/.mirror/facebookresearch+DiT/repo] [--variants=...] [--batch 2]
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import types


class _Placeholder(type):
  """A class whose every attribute is again a placeholder class."""

  def __getattr__(cls, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Placeholder(name, (), {})


class _Anything(types.ModuleType):
  """A package whose every attribute is a placeholder class."""
  __path__: list = []

  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Placeholder(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  def find_spec(self, name, path=None, target=None):
    if name == 'torchvision' or name.startswith('torchvision.'):
      return importlib.util.spec_from_loader(name, self, is_package=True)
    return None

  def create_module(self, spec):
    return _Anything(spec.name)

  def exec_module(self, module):
    pass


def _stub_torchvision():
  """The verification venv's torchvision is a CUDA build beside a CPU torch (its _C.so needs
  libc10_cuda.so) and does not import. timm imports it at top level for data sets, transforms
  and FrozenBatchNorm2d, none of which DiT's blocks use: placeholders are enough."""
  try:
    import torchvision  # noqa: F401
    return
  except (ImportError, RuntimeError, OSError):
    pass
  for name in [k for k in sys.modules if k == 'torchvision' or k.startswith('torchvision.')]:
    del sys.modules[name]
  sys.meta_path.insert(0, _StubFinder())


_stub_torchvision()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from score_sde.models import convert_dit  # noqa: E402

TOLERANCE = 1e-4
# name: (DiT constructor, input size, in channels, num_classes, learn_sigma, float64 reference)
VARIANTS = {
    'S/2 8x8x4': ('DiT_S_2', 8, 4, 10, True, True),
    'B/4 16x16x3 pixels no-sigma': ('DiT_B_4', 16, 3, 10, False, True),
    'XL/2 32x32x4 ImageNet-256 latents': ('DiT_XL_2', 32, 4, 1000, True, False),
}


def dit_models(path: str | None, git_dir: str):
  """facebookresearch/DiT's ``models`` module, from a checkout or the bare mirror."""
  if path is None:
    path = tempfile.mkdtemp(prefix='dit_reference_')
    archive = subprocess.run(['git', f'--git-dir={git_dir}', 'archive', 'HEAD', 'models.py'],
                             check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', path], input=archive, check=True)
  spec = importlib.util.spec_from_file_location('dit_reference_models',
                                                os.path.join(path, 'models.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def randomize(model: torch.nn.Module, seed: int) -> None:
  """Every weight ~ N(0, 1/fan_in), vectors ~ N(0, 0.1^2), the class table ~ N(0, 1)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name == 'pos_embed':
        continue
      std = 1.0 if 'embedding_table' in name else (
          p[0].numel()**-0.5 if p.ndim >= 2 else 0.1)
      p.copy_(torch.randn(p.shape, generator=gen) * std)


def rel_err(ours, ref) -> float:
  return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / np.max(np.abs(ref)))


def compare(label, models, spec, batch: int, seed: int) -> bool:
  ctor, size, channels, classes, learn_sigma, f64 = spec
  ref_model = getattr(models, ctor)(input_size=size, in_channels=channels, num_classes=classes,
                                    learn_sigma=learn_sigma).eval()
  randomize(ref_model, seed)
  # DiT computes the timestep sinusoids in float32 whatever the model's dtype: cast them to it.
  ref_model.t_embedder.mlp.register_forward_pre_hook(
      lambda mlp, args: tuple(a.to(mlp[0].weight.dtype) for a in args))
  n_torch = sum(p.numel() for p in ref_model.parameters())
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
  t = rng.uniform(0, 999, batch).astype(np.float32)
  y = rng.integers(0, classes + 1, batch)
  y[-1] = classes                                     # the null class
  refs = {}
  with torch.no_grad():
    for dtype in (torch.float32, torch.float64) if f64 else (torch.float32,):
      m = ref_model.to(dtype)
      refs[dtype] = m(torch.from_numpy(x).to(dtype), torch.from_numpy(t).to(dtype),
                      torch.from_numpy(y)).numpy()
    ref_model.to(torch.float32)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'dit.safetensors')
    save_file({k: v.contiguous() for k, v in ref_model.state_dict().items()}, path)
    if f64:  # small variants: also a training checkpoint of DiT's train.py, read with torch
      torch.save({'model': {}, 'ema': ref_model.state_dict()}, os.path.join(tmp, 'ckpt.pt'))
    del ref_model
    start = time.time()
    model, params = convert_dit.load(path)
    convert_s = time.time() - start
    same_pt = not f64 or jax.tree.all(jax.tree.map(
        np.array_equal, params, convert_dit.load(os.path.join(tmp, 'ckpt.pt'))[1]))
  n_flax = sum(np.size(v) for v in jax.tree.leaves(params))
  pos = (size // model.patch_size)**2 * model.hidden_size
  out = jax.jit(lambda p, x, t, y: model.apply({'params': p}, x, t, class_labels=y,
                                               return_sigma=True))(
      params, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t), jnp.asarray(y))
  out = np.asarray(out).transpose(0, 3, 1, 2)
  err32 = rel_err(out, refs[torch.float32])
  print(f'\n{label}: batch {batch}; parameters: DiT {n_torch:,} (incl. pos_embed {pos:,}), ours '
        f'{n_flax:,} (+ pos_embed = {n_flax + pos:,}); conversion {convert_s:.1f} s; '
        f'same params from a .pt training checkpoint: {same_pt if f64 else "not run"}')
  print(f'  output {tuple(refs[torch.float32].shape)}: flax vs torch f32 {err32:.2e}', end='')
  if f64:
    print(f', flax vs torch f64 {rel_err(out, refs[torch.float64]):.2e}, torch f32 vs f64 '
          f'{rel_err(refs[torch.float32], refs[torch.float64]):.2e}')
  else:
    print()
  return err32 <= TOLERANCE and n_flax + pos == n_torch and same_pt


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--dit', default=None, help='a checkout of facebookresearch/DiT')
  parser.add_argument('--dit_git', default='/work/.mirror/facebookresearch+DiT/repo',
                      help='its bare git directory, used when --dit is not given')
  parser.add_argument('--variants', default=','.join(VARIANTS),
                      help=f'comma-separated subset of: {list(VARIANTS)}')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  models = dit_models(args.dit, args.dit_git)
  ok = True
  for label in args.variants.split(','):
    ok = compare(label, models, VARIANTS[label], args.batch, args.seed) and ok
  print(f'\nall within {TOLERANCE:g} relative and parameter counts equal: {ok}')
  raise SystemExit(0 if ok else 1)


if __name__ == '__main__':
  main()
