"""Starts a multi-process run on this machine: one process per simulated host.

    python -m score_sde.launch --num_processes=2 --local_devices=4 -- \\
        train.py --config=configs/vp/toy_spiral.py --workdir=runs/two_hosts

Each process gets ``SCORE_SDE_COORDINATOR`` (localhost and a free port), ``SCORE_SDE_NUM_PROCESSES``
and ``SCORE_SDE_PROCESS_ID``, which ``parallel.initialize_distributed`` reads, so the command after
``--`` is the single-host command unchanged. ``--local_devices`` gives each process that many CPU
devices (``--xla_force_host_platform_device_count``): the way to exercise a multi-host run, its
data sharding, checkpoints and preemption, without a cluster. On a cluster, start one process per
host yourself (the same command on every host) or let SLURM / the TPU runtime do it (README,
"Running on many hosts").

SIGTERM / SIGINT to the launcher are forwarded to every process (they save one checkpoint and
stop together). If a process fails, the launcher prints one line saying which and how (its exit
status or the signal that killed it), stops the others (SIGTERM, then SIGKILL after ``--grace``
seconds, by default the heartbeat timeout plus 15 s: a process that lost a peer reports it and
exits by itself within the heartbeat timeout, ``parallel.heartbeat_timeout``) and exits with the
failed process's status (128 + the signal's number for a killed one).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from score_sde import parallel


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def process_env(process_id: int, num_processes: int, port: int, local_devices: int | None,
                base: dict | None = None) -> dict:
  """The environment of process ``process_id``."""
  env = dict(os.environ if base is None else base)
  env.update({parallel.ENV_COORDINATOR: f'localhost:{port}',
              parallel.ENV_NUM_PROCESSES: str(num_processes),
              parallel.ENV_PROCESS_ID: str(process_id)})
  if local_devices:
    flags = [f for f in env.get('XLA_FLAGS', '').split()
             if not f.startswith('--xla_force_host_platform_device_count')]
    env['XLA_FLAGS'] = ' '.join(flags + [f'--xla_force_host_platform_device_count={local_devices}'])
    env['JAX_PLATFORMS'] = 'cpu'
  return env


def command(args: list[str]) -> list[str]:
  """A script (``x.py``) or module (``-m pkg``) runs under this Python; anything else as is."""
  if args and (args[0].endswith('.py') or args[0] == '-m'):
    return [sys.executable] + args
  return args


class LaunchError(Exception):
  """A bad launcher argument: printed as one line, exit status 2."""


def describe_exit(code: int) -> str:
  """'exited with status 2' / 'was killed by SIGKILL'."""
  if code < 0:
    try:
      return f'was killed by {signal.Signals(-code).name}'
    except ValueError:
      return f'was killed by signal {-code}'
  return f'exited with status {code}'


def _stop(procs, sig):
  for p in procs:
    if p.poll() is None:
      p.send_signal(sig)


def run(cmd: list[str], num_processes: int, local_devices: int | None = None,
        port: int | None = None, grace: float | None = None, log_dir: str | None = None) -> int:
  """Runs ``cmd`` as ``num_processes`` cooperating processes; returns the exit status.

  With ``log_dir`` each process's stdout and stderr go to ``<log_dir>/process_<i>.log``.
  """
  if port and parallel.port_in_use(port):
    raise LaunchError(f'--port={port} is in use on this host ({parallel.port_in_use(port)}); '
                      'choose another port, or leave --port out to use a free one.')
  port = port or free_port()
  grace = parallel.heartbeat_timeout() + 15 if grace is None else grace
  logs = []
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)
    logs = [open(os.path.join(log_dir, f'process_{i}.log'), 'w') for i in range(num_processes)]
  procs = [subprocess.Popen(command(cmd), env=process_env(i, num_processes, port, local_devices),
                            stdout=logs[i] if logs else None, stderr=subprocess.STDOUT if logs
                            else None) for i in range(num_processes)]
  forwarded = []

  def forward(signum, frame):
    forwarded.append(signum)
    _stop(procs, signal.SIGTERM)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  first, failed_at = None, None   # the process that failed first, and when
  try:
    while True:
      running = [p for p in procs if p.poll() is None]
      if first is None:
        first = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
        if first is not None:
          failed_at = time.monotonic()
          print(f'Error: process {first} of {num_processes} (pid {procs[first].pid}) '
                f'{describe_exit(procs[first].returncode)}'
                f'{"; stopping the others" if running else ""}.', file=sys.stderr, flush=True)
          _stop(procs, signal.SIGTERM)
      if not running:
        break
      if failed_at is not None and time.monotonic() - failed_at > grace:
        _stop(procs, signal.SIGKILL)
      time.sleep(0.1)
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
    for f in logs:
      f.close()
  code = 0 if first is None else procs[first].returncode
  return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if '--' not in argv:
    print(__doc__.split('\n\n')[1], file=sys.stderr)
    return 2
  split = argv.index('--')
  parser = argparse.ArgumentParser(prog='python -m score_sde.launch',
                                   description='Run a command as several cooperating processes.')
  parser.add_argument('--num_processes', type=int, required=True)
  parser.add_argument('--local_devices', type=int, default=None,
                      help='CPU devices per process (simulated hosts on one machine).')
  parser.add_argument('--port', type=int, default=None, help='Coordinator port (default: free).')
  parser.add_argument('--grace', type=float, default=None,
                      help='Seconds before SIGKILL once a process has failed (default: the '
                      'heartbeat timeout + 15).')
  parser.add_argument('--log_dir', default=None,
                      help='Write each process\'s output to LOG_DIR/process_<i>.log.')
  parser.error = _one_line_error
  try:
    args = parser.parse_args(argv[:split])
    if args.num_processes < 1 or not argv[split + 1:]:
      raise LaunchError('need --num_processes >= 1 and a command after --')
    if args.local_devices is not None and args.local_devices < 1:
      raise LaunchError(f'--local_devices={args.local_devices}: each process needs at least 1 '
                        'device.')
    return run(argv[split + 1:], args.num_processes, args.local_devices, args.port, args.grace,
               args.log_dir)
  except LaunchError as e:
    print(f'Error: {e}', file=sys.stderr, flush=True)
    return 2


def _one_line_error(message: str):
  raise LaunchError(f'{message} (python -m score_sde.launch --help lists the options).')


if __name__ == '__main__':
  sys.exit(main())
