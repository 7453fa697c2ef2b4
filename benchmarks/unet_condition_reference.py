"""Our conditional UNet against diffusers' ``UNet2DConditionModel`` with the same random weights.

Run in the verification environment (torch + diffusers), nothing downloaded:

    PYTHONPATH=. /work/torchenv/bin/python benchmarks/unet_condition_reference.py [--configs tiny sd1 sd2]

Random-weight ``UNet2DConditionModel`` (every parameter drawn at random, norms and biases
included) -> ``save_pretrained`` (config.json + diffusion_pytorch_model.safetensors) ->
``convert_unet.load`` -> same output for a random latent, timestep and context; max relative error
max|ours - theirs| / max|theirs|, asserted <= 1e-4. The SD sizes run at a 32x32 latent to keep
memory and time down (the parameters do not depend on the resolution).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

# The verification venv's torchvision does not load with its torch ("operator torchvision::nms
# does not exist"); diffusers only needs it through optional transformers imports.
sys.modules.setdefault('torchvision', None)

import diffusers  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from score_sde.models import convert_unet  # noqa: E402

CONFIGS = {
    'tiny': dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                 down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                 up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), layers_per_block=1,
                 cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8),
    'tiny_linear': dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                        down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'),
                        up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'),
                        layers_per_block=2, cross_attention_dim=24, attention_head_dim=(2, 4),
                        norm_num_groups=8, use_linear_projection=True,
                        transformer_layers_per_block=2),
    # Stable Diffusion 1.x (runwayml/stable-diffusion-v1-5 unet/config.json; defaults otherwise).
    'sd1': dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8),
    # Stable Diffusion 2.x (stabilityai/stable-diffusion-2-1 unet/config.json).
    'sd2': dict(sample_size=96, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                use_linear_projection=True),
}
SIZE = {'tiny': 16, 'tiny_linear': 8, 'sd1': 32, 'sd2': 32}


def randomize(model: torch.nn.Module) -> None:
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in model.named_parameters():
      scale = 0.3 if p.ndim == 1 else min(0.5, 1.5 / np.sqrt(p[0].numel()))
      offset = 1.0 if p.ndim == 1 and 'norm' in name and name.endswith('weight') else 0.0
      p.copy_(torch.randn(p.shape, generator=gen) * scale + offset)


def check(name: str, folder: str) -> None:
  torch_model = diffusers.UNet2DConditionModel(**CONFIGS[name]).eval()
  randomize(torch_model)
  count = sum(p.numel() for p in torch_model.parameters())
  path = os.path.join(folder, name)
  torch_model.save_pretrained(path, safe_serialization=True)
  rng = np.random.default_rng(0)
  c_in, size = torch_model.config.in_channels, SIZE[name]
  x = rng.standard_normal((2, c_in, size, size)).astype(np.float32)
  t = np.array([10.0, 733.0], np.float32)
  context = rng.standard_normal((2, 77, torch_model.config.cross_attention_dim)).astype(np.float32)
  start = time.perf_counter()
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x), torch.from_numpy(t),
                           encoder_hidden_states=torch.from_numpy(context)).sample.numpy()
  torch_seconds = time.perf_counter() - start
  del torch_model
  gc.collect()
  model, params = convert_unet.load(path)
  start = time.perf_counter()
  out = jax.jit(lambda p, x, t, c: model.apply({'params': p}, x, t, c))(
      params, x.transpose(0, 2, 3, 1), t, context)
  out = np.asarray(out).transpose(0, 3, 1, 2)
  seconds = time.perf_counter() - start
  ours = sum(v.size for v in jax.tree.leaves(params))
  rel = float(np.abs(out - expected).max() / np.abs(expected).max())
  print(f'{name}: output {expected.shape} max rel err {rel:.2e}; parameters diffusers '
        f'{count:,} ours {ours:,}; torch forward {torch_seconds:.1f}s, ours jit+run '
        f'{seconds:.1f}s', flush=True)
  assert ours == count and rel <= 1e-4, (name, rel)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--configs', nargs='+', default=['tiny', 'tiny_linear', 'sd1'],
                      choices=sorted(CONFIGS))
  args = parser.parse_args()
  print(f'diffusers {diffusers.__version__}, torch {torch.__version__}, jax {jax.__version__}')
  with tempfile.TemporaryDirectory() as folder:
    for name in args.configs:
      check(name, folder)
      gc.collect()


if __name__ == '__main__':
  main()
