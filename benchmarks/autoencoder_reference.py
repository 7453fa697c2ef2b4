"""The Flax AutoencoderKL computes diffusers' function: a reference check (needs torch, diffusers).

For a small configuration and Stable Diffusion 1.x's, diffusers' ``AutoencoderKL`` is built with
random weights (its GroupNorm scales and shifts perturbed away from 1 and 0, so a scale/bias mix-up
would show), written with ``save_pretrained`` (config.json + diffusion_pytorch_model.safetensors),
read back by this project's converter (``convert_autoencoder.load_diffusers``, numpy only), and
both networks see the same images and latents. Reported per configuration: the parameter counts,
and the relative error max|flax - torch| / max|torch| of the encoder's moments (mean and
log-variance, before clipping) and of the decoder's output, with torch float64 beside them to show
how much is float32 round-off. The same weights under the LDM code's attention names (``query``,
``key``, ``value``, ``proj_attn``, as in the published SD files) are converted too and must give
identical parameters.

Not a CI test: torch stays out of the project's environment. Run in the verification venv (torch,
diffusers, safetensors, jax and this package), from the repository root:

  JAX_PLATFORMS=cpu PYTHONPATH=$PWD /work/torchenv/bin/python benchmarks/autoencoder_reference.py \
      [--sd_image_size 64] [--batch 2] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# The verification venv's torchvision does not load with its torch ("operator torchvision::nms
# does not exist"); diffusers only needs it through optional transformers imports.
sys.modules.setdefault('torchvision', None)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from diffusers.utils import logging as diffusers_logging  # noqa: E402

from score_sde.models import convert_autoencoder  # noqa: E402

diffusers_logging.set_verbosity_error()  # its float64-cast advice, once per .to()

TOLERANCE = 1e-4

SMALL = dict(in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
             latent_channels=2, norm_num_groups=8, down_block_types=('DownEncoderBlock2D',) * 2,
             up_block_types=('UpDecoderBlock2D',) * 2, scaling_factor=0.5)
SD1 = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
           layers_per_block=2, latent_channels=4, norm_num_groups=32,
           down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
           sample_size=512, scaling_factor=0.18215)


def random_vae(kwargs: dict, seed: int) -> AutoencoderKL:
  torch.manual_seed(seed)
  vae = AutoencoderKL(**kwargs).eval()
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if 'norm' in name:  # GroupNorm: weight 1, bias 0 at init; make them distinguishable
        p.add_(0.2 * torch.randn_like(p))
  return vae


def rel_err(ours, ref) -> float:
  return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / np.max(np.abs(ref)))


def compare(label: str, kwargs: dict, image_size: int, batch: int, seed: int) -> bool:
  vae = random_vae(kwargs, seed)
  n_torch = sum(p.numel() for p in vae.parameters())
  rng = np.random.default_rng(seed)
  x = rng.uniform(-1, 1, (batch, kwargs['in_channels'], image_size, image_size)).astype(np.float32)
  down = 2**(len(kwargs['block_out_channels']) - 1)
  z = rng.standard_normal((batch, kwargs['latent_channels'], image_size // down,
                           image_size // down)).astype(np.float32)
  with torch.no_grad():
    ref = {}
    for dtype in (torch.float32, torch.float64):
      v = vae.to(dtype)
      ref[dtype] = (v.encode(torch.from_numpy(x).to(dtype)).latent_dist.parameters.numpy(),
                    v.decode(torch.from_numpy(z).to(dtype)).sample.numpy())
  with tempfile.TemporaryDirectory() as tmp:
    vae.to(torch.float32).save_pretrained(tmp, safe_serialization=True)
    start = time.time()
    model, params = convert_autoencoder.load_diffusers(tmp)
    convert_s = time.time() - start
    # The same weights under the LDM attention names must give the same parameters.
    sd = {k: v.numpy() for k, v in vae.state_dict().items()}
    old = {k.replace('to_q.', 'query.').replace('to_k.', 'key.').replace('to_v.', 'value.')
           .replace('to_out.0.', 'proj_attn.'): v for k, v in sd.items()}
    save_file(old, os.path.join(tmp, 'old.safetensors'))
    _, params_old = convert_autoencoder.load_diffusers(os.path.join(tmp, 'old.safetensors'))
  same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(params_old)))
  n_flax = sum(np.size(v) for v in jax.tree.leaves(params))
  moments = model.apply({'params': params}, x.transpose(0, 2, 3, 1), method='encode')
  decoded = model.apply({'params': params}, z.transpose(0, 2, 3, 1), method='decode')
  moments, decoded = np.asarray(moments).transpose(0, 3, 1, 2), np.asarray(decoded).transpose(0, 3, 1, 2)
  errs = {'moments': (rel_err(moments, ref[torch.float64][0]),
                      rel_err(ref[torch.float32][0], ref[torch.float64][0]),
                      rel_err(moments, ref[torch.float32][0])),
          'decoded': (rel_err(decoded, ref[torch.float64][1]),
                      rel_err(ref[torch.float32][1], ref[torch.float64][1]),
                      rel_err(decoded, ref[torch.float32][1]))}
  print(f'\n{label}: image {image_size}x{image_size}x{kwargs["in_channels"]}, batch {batch}; '
        f'parameters: diffusers {n_torch:,}, ours {n_flax:,}; conversion {convert_s:.1f} s; '
        f'LDM attention names give identical params: {same}')
  print('| output | flax vs torch f32 | flax vs torch f64 | torch f32 vs f64 |')
  print('|---|---|---|---|')
  ok = same and n_torch == n_flax
  for name, (flax64, torch64, flax32) in errs.items():
    print(f'| {name} | {flax32:.2e} | {flax64:.2e} | {torch64:.2e} |')
    ok = ok and flax32 <= TOLERANCE
  return ok


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--small_image_size', type=int, default=16)
  parser.add_argument('--sd_image_size', type=int, default=64)
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  ok = compare('small', SMALL, args.small_image_size, args.batch, args.seed)
  ok = compare('SD 1.x', SD1, args.sd_image_size, args.batch, args.seed) and ok
  print(f'\nall within {TOLERANCE:g} relative: {ok}')
  raise SystemExit(0 if ok else 1)


if __name__ == '__main__':
  main()
