"""The Flax FID Inception computes pytorch-fid's function: a reference check (needs torch).

pytorch-fid's ``InceptionV3`` (and its full ``fid_inception_v3`` for the logits) is built with
random weights instead of downloading them: its weight loader is patched at run time to return
a random state dict of the right shapes (batch-norm statistics included, so a mix-up of
mean/var/scale/bias would show). The state dict goes through this project's converter
(``torch.save`` -> ``convert_inception.convert`` -> ``inception.load_variables``), and both
networks see the same images (uint8 and float, up- and downsampled to 299). Reported: the
relative error max|flax - torch| / max|torch| of pool_3 and logits, and torch float64 as a
tie-breaker showing how much of it is float32 round-off on either side.

Not a CI test: torch stays out of the project's environment. Setup, in a separate venv:

  python3 -m venv /work/torchenv
  /work/torchenv/bin/pip install torch torchvision pytorch-fid    # PyPI wheels
  /work/torchenv/bin/pip install -e .                             # jax, flax, this package

Run (from the repository root): JAX_PLATFORMS=cpu /work/torchenv/bin/python \
    benchmarks/inception_reference.py [--num_images 6] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch
import torchvision
from pytorch_fid import inception as pt_inception

from score_sde.evaluation import convert_inception, inception

TOLERANCE = 1e-4


def random_state_dict(seed: int) -> dict[str, torch.Tensor]:
  """Random weights with the FID Inception's keys and shapes (its blocks keep torchvision's)."""
  shapes = torchvision.models.inception_v3(
      weights=None, num_classes=inception.NUM_CLASSES, aux_logits=False,
      init_weights=False).state_dict()
  g = torch.Generator().manual_seed(seed)
  uniform = lambda t, lo, hi: lo + (hi - lo) * torch.rand(t.shape, generator=g)
  state = {}
  for key, t in shapes.items():
    if key.endswith('num_batches_tracked'):
      state[key] = t.clone()
    elif key.endswith('conv.weight') or key == 'fc.weight':     # He scale: O(1) activations
      fan_in = t[0].numel()
      state[key] = torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5
    elif key.endswith('running_var'):
      state[key] = uniform(t, 0.5, 2.0)
    elif key.endswith('bn.weight'):
      state[key] = uniform(t, 0.5, 1.5)
    else:                                                         # bn.bias, running_mean, fc.bias
      state[key] = uniform(t, -0.5, 0.5)
  return state


def test_images(num: int, seed: int) -> list[np.ndarray]:
  """Batches: uint8 32x32 (CIFAR-10's size), float [0, 1] 64x48 smooth, uint8 400x320 (down)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 48), indexing='ij')
  smooth = np.stack([np.sin(3 * yy + p) * np.cos(5 * xx - p) for p in rng.uniform(0, 6, 3)], -1)
  smooth = (0.5 + 0.5 * smooth[None] * rng.uniform(0.3, 1.0, (num, 1, 1, 3))).astype(np.float32)
  return [rng.integers(0, 256, (num, 32, 32, 3), dtype=np.uint8), smooth,
          rng.integers(0, 256, (num, 400, 320, 3), dtype=np.uint8)]


def torch_outputs(blocks, full, images: np.ndarray, dtype) -> dict[str, np.ndarray]:
  """pytorch-fid's pipeline: [0, 1] NCHW -> InceptionV3 -> pool_3; fc of the full network."""
  x = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
  x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dtype)
  with torch.no_grad():
    pool = blocks.to(dtype)(x)[0][:, :, 0, 0]
    logits = full.to(dtype).fc(pool)
  return {'pool_3': pool.double().numpy(), 'logits': logits.double().numpy()}


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a - b).max() / np.abs(b).max())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_images', type=int, default=6)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count() or 1)
  state = random_state_dict(args.seed)
  pt_inception.load_state_dict_from_url = lambda *a, **k: state    # no download
  blocks = pt_inception.InceptionV3([pt_inception.InceptionV3.DEFAULT_BLOCK_INDEX]).eval()
  full = pt_inception.fid_inception_v3().eval()
  num_params = sum(p.numel() for p in full.parameters())
  num_stats = sum(b.numel() for n, b in full.named_buffers() if 'running' in n)

  with tempfile.TemporaryDirectory() as tmp:
    src, dst = os.path.join(tmp, 'random_fid_inception.pth'), os.path.join(tmp, 'w.npz')
    torch.save(state, src)
    convert_inception.convert(src, dst)
    variables = inception.load_variables(dst)
  features = inception.get_feature_fn(variables, outputs=('pool_3', 'logits'))

  print(f'pytorch-fid FID Inception: {num_params} parameters, {num_stats} batch-norm statistics')
  print('| images | output | flax vs torch fp32 | flax vs torch fp64 | torch fp32 vs fp64 |')
  print('|---|---|---|---|---|')
  worst = 0.0
  for images in test_images(args.num_images, args.seed):
    ours = features(images)
    t32 = torch_outputs(blocks, full, images, torch.float32)
    t64 = torch_outputs(blocks, full, images, torch.float64)
    label = f'{images.dtype} {images.shape[1]}x{images.shape[2]} x{images.shape[0]}'
    for key in ('pool_3', 'logits'):
      errors = (relative_error(ours[key], t32[key]), relative_error(ours[key], t64[key]),
                relative_error(t32[key], t64[key]))
      worst = max(worst, errors[0])
      print(f'| {label} | {key} | ' + ' | '.join(f'{e:.2e}' for e in errors) + ' |')
  verdict = 'PASS' if worst <= TOLERANCE else 'FAIL'
  print(f'worst relative error flax vs pytorch-fid (fp32): {worst:.2e} '
        f'(tolerance {TOLERANCE:.0e}): {verdict}')
  return 0 if verdict == 'PASS' else 1


if __name__ == '__main__':
  raise SystemExit(main())
