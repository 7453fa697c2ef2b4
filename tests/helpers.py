"""Shared test helpers: the tiny toy training config (as a ConfigDict and as command-line flags),
loading train.py / sample.py in-process, and tree comparisons."""
import importlib
import os
import sys

import jax
import numpy as np
from absl import flags

from configs import default_toy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny toy run most training tests use: 12 steps of batch 64 of a 2-layer MLP (nf 32), logs
# every 4, eval every 6, checkpoints every 4 (kept every 8), no snapshot sampling.
TINY = {
    'training.n_iters': 12, 'training.batch_size': 64, 'training.log_freq': 4,
    'training.eval_freq': 6, 'training.snapshot_freq': 8,
    'training.snapshot_freq_for_preemption': 4, 'training.snapshot_sampling': False,
    'model.nf': 32, 'model.num_layers': 2, 'optim.warmup': 2,
}
# sample.py and --mode=eval also read these.
TINY_FLAGS = [f'--config.{k}={v}' for k, v in TINY.items()] + [
    '--config.sampling.batch_size=64', '--config.eval.batch_size=64']


def set_path(config, path: str, value) -> None:
  *sections, key = path.split('.')
  node = config
  for section in sections:
    node = node[section]
  setattr(node, key, value)


def tiny_toy_config(**training_overrides):
  """default_toy with ``TINY``; keyword arguments override ``config.training`` fields."""
  config = default_toy.get_config()
  for path, value in TINY.items():
    set_path(config, path, value)
  for k, v in training_overrides.items():
    setattr(config.training, k, v)
  return config


def file_stats(directory) -> dict:
  """path -> (size, mtime) of every file under ``directory``: what 'nothing changed' means."""
  found = {}
  for root, _, names in os.walk(directory):
    for name in names:
      st = os.stat(os.path.join(root, name))
      found[os.path.join(root, name)] = (st.st_size, st.st_mtime_ns)
  return found


def assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _library_flags() -> set[str]:
  """The flags absl, grain and orbax define when the entry points' imports load them."""
  import absl.app  # noqa: F401
  import score_sde.checkpointing.paper  # noqa: F401
  import score_sde.cli  # noqa: F401
  import score_sde.training  # noqa: F401
  return set(flags.FLAGS)


_BASE_FLAGS = _library_flags()


def reset_flags() -> None:
  """Removes the flags an entry point defined on absl's global FLAGS (--config, --workdir, ...)
  and puts the others (--traceback, ...) back to their defaults."""
  for name in set(flags.FLAGS) - _BASE_FLAGS:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()


def entry_point(script: str):
  """The program behind ``train.py`` / ``sample.py`` (``score_sde.apps.train`` / ``.sample``),
  loaded afresh: the flags of the previously loaded one are removed first, since both define
  --config and --workdir on absl's global FLAGS."""
  reset_flags()
  for module in [m for m in sys.modules if m.startswith('score_sde.apps.')]:
    del sys.modules[module]     # the programs define their flags on import
  return importlib.import_module(f'score_sde.apps.{os.path.splitext(script)[0]}')


def run_entry_point(script: str, *args) -> int:
  """Runs ``python <script> <args>`` in this process (from the repository root, through
  ``cli.run``); returns its exit status."""
  import pytest

  from score_sde import cli
  main = entry_point(script).main
  cwd, argv = os.getcwd(), sys.argv
  os.chdir(ROOT)
  try:
    with pytest.raises(SystemExit) as exit_info:
      cli.run(main, argv=[script, *args])
  finally:
    os.chdir(cwd)
    sys.argv = argv
  return exit_info.value.code or 0


def tiny_context_config():
  """The digits (16x16x1, VP) with a tiny Stable Diffusion UNet (blocks of 8 and 16 channels)
  cross-attending to (4, 8) contexts; 2-step DDIM-like DPM-Solver++(1) sampling, batch 4."""
  from configs.vp import digits_ddpmpp_continuous
  config = digits_ddpmpp_continuous.get_config()
  m = config.model
  m.name, m.unet_preset, m.unet_channels, m.precond = 'unet_condition', 'tiny', (8, 16), 'paper'
  m.context_dim, m.context_length = 8, 4
  s = config.sampling
  s.method, s.num_steps, s.order, s.batch_size = 'dpm_solver', 2, 1, 4
  config.training.batch_size = config.eval.batch_size = 4
  return config


def random_params(shapes, seed: int = 0, scale: float = 0.2):
  """Gaussian numpy arrays shaped like ``shapes`` (a tree of ShapeDtypeStructs): parameters
  without compiling a network's initialiser (which costs ~20 s for a UNet on a loaded CPU)."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: scale * rng.standard_normal(s.shape).astype(np.float32), shapes)


def assert_zero_output_is_context_free(out, at_init, trained, contexts, reference):
  """``out(params, context)`` with the cross-attention output projections at zero
  (``at_init``) equals the context-free network's ``reference`` for each of ``contexts``; with
  them random (``trained``) it differs between the first two contexts."""
  scale = float(np.abs(reference).max())
  for context in contexts:
    np.testing.assert_allclose(out(at_init, context), reference, rtol=0, atol=1e-5 * scale)
  a, b = out(trained, contexts[0]), out(trained, contexts[1])
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2 * scale
