"""Test-wide set-up: eight virtual CPU devices, so multi-device code is exercised on any machine.

The flag must be set before JAX initialises its backends, hence here and not in a fixture.
Single-device code simply runs on device 0.
"""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
