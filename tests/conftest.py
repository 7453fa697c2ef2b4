"""Test-wide set-up: eight virtual CPU devices, so multi-device code is exercised on any machine.

The flag must be set before JAX initialises its backends, hence here and not in a fixture.
Single-device code simply runs on device 0.
"""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import logging  # noqa: E402
import warnings  # noqa: E402

# The test that restores a checkpoint into a mismatched tree leaves orbax's read tasks failed and
# unawaited; their reports at interpreter exit would bury pytest's summary line.
logging.getLogger('asyncio').setLevel(logging.CRITICAL)
warnings.filterwarnings('ignore', message='coroutine .* was never awaited', category=RuntimeWarning)
