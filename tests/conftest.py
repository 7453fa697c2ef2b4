"""Test-wide set-up: eight virtual CPU devices, so multi-device code is exercised on any machine.

The flag must be set before JAX initialises its backends, hence here and not in a fixture.
Single-device code simply runs on device 0. ``make test`` runs the suite in two pytest-xdist
workers (``--dist loadscope``: a module's tests, and so its module fixtures, stay on one worker);
the workers inherit this environment from the controlling process and share its cache.
"""
import os
import shutil
import tempfile

# XLA:CPU's optimisation is most of a test's compile time and the tests' programs are tiny:
# unoptimised, tiny NCSN++'s gradient compiles in 3.4 s instead of 38.6 s, and only tests that run
# long loops run slower. The CLI and multi-host tests' subprocesses get the same flags.
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
os.environ['SCORE_SDE_TEST_XLA_FLAGS'] = FAST_COMPILE
_flags = os.environ.get('XLA_FLAGS', '').split()
os.environ['XLA_FLAGS'] = ' '.join(_flags + [f for f in (
    FAST_COMPILE, '--xla_force_host_platform_device_count=8') if f not in _flags])
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# One persistent compilation cache for the session, shared with the CLI tests' subprocesses:
# the many train_and_evaluate runs of the same tiny config compile identical programs, and a
# cache hit costs ~1/6 of a compile (benchmarks/RESULTS.md, Test suite). A fresh directory per
# session keeps runs independent; SCORE_SDE_TEST_CACHE=0 turns it off.
_WORKER = 'PYTEST_XDIST_WORKER' in os.environ     # an xdist worker: the controller made the cache
if _WORKER and 'score_sde_test_jax_cache_' in os.environ.get('JAX_COMPILATION_CACHE_DIR', ''):
  pass
elif os.environ.get('SCORE_SDE_TEST_CACHE', '1') != '0':
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='score_sde_test_jax_cache_')
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
else:   # nor may the CLI tests' subprocesses write the user's cache (score_sde.compilation_cache)
  os.environ['SCORE_SDE_CACHE_DIR'] = '0'

import logging  # noqa: E402
import warnings  # noqa: E402

# The test that restores a checkpoint into a mismatched tree leaves orbax's read tasks failed and
# unawaited; their reports at interpreter exit would bury pytest's summary line.
logging.getLogger('asyncio').setLevel(logging.CRITICAL)
warnings.filterwarnings('ignore', message='coroutine .* was never awaited', category=RuntimeWarning)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  cache = os.environ.get('JAX_COMPILATION_CACHE_DIR', '')
  if not _WORKER and os.path.basename(cache).startswith('score_sde_test_jax_cache_'):
    shutil.rmtree(cache, ignore_errors=True)
