"""The only module that knows about devices and hosts: meshes, sharding, the data-parallel step.

Data parallelism with ``pmap``'s semantics — one replica of the state per device, each device
running the step on its slice of the global batch, gradients averaged with ``lax.pmean`` — but
implemented as ``jax.jit`` of ``jax.shard_map`` over a one-axis ``Mesh`` of every device of every
host. The state lives in global arrays replicated over the mesh (orbax saves and restores them
across hosts directly) and a global batch (B, ...) is sharded along B. The same shard_map runs
every data-parallel computation: the train and eval steps (``data_parallel_step``), per-example
evaluation (``per_example_step``) and sampling (``sampling_step``, a distinct key per device).
The datasets' host layout (num_local_devices, b, ...) is ``shard`` / ``unshard``.

Multi-host: ``initialize_distributed`` connects the processes (launcher, SLURM or TPU
environment), each host feeds its own slice of the global batch (``put_batch``) and every
decision that changes control flow (stopping on a signal) is agreed by all hosts
(``any_process``), since a host that leaves the step loop alone would deadlock the others in the
next collective.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import os
import queue
import re
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from score_sde.errors import ConfigError, ScoreSDEError

AXIS = 'batch'

# Environment of ``python -m score_sde.launch`` (one process per host or per device group).
ENV_COORDINATOR = 'SCORE_SDE_COORDINATOR'        # host:port of process 0
ENV_NUM_PROCESSES = 'SCORE_SDE_NUM_PROCESSES'
ENV_PROCESS_ID = 'SCORE_SDE_PROCESS_ID'
ENV_INIT_TIMEOUT = 'SCORE_SDE_INIT_TIMEOUT'      # seconds to wait for all processes (default 300)
ENV_HEARTBEAT_TIMEOUT = 'SCORE_SDE_HEARTBEAT_TIMEOUT'   # seconds of silence: a process is lost
HEARTBEAT_TIMEOUT = 60
EXIT_LOST_PROCESS = 75   # EX_TEMPFAIL: the run can be resumed by rerunning the same command
# Bytes of memory per device ('16G', '512M'): a limit the compiled steps are checked against
# before their first call. Accelerators report their own; on CPU only this limit is checked.
ENV_DEVICE_MEMORY = 'SCORE_SDE_DEVICE_MEMORY'


class DistributedError(ScoreSDEError, RuntimeError):
  """The processes of a multi-host run cannot connect or do not agree."""


class OutOfMemoryError(ScoreSDEError, MemoryError):
  """A step needs more memory than a device has."""


# ---------------------------------------------------------------------------------------------
# Hosts


def _launcher_env() -> dict | None:
  """Coordinator, process count and id set by ``score_sde.launch`` (or by hand); None if unset."""
  names = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
  present = [n for n in names if n in os.environ]
  if not present:
    return None
  if len(present) != len(names):
    raise ConfigError(f'Set all of {names} or none; only {present} are set.')
  try:
    num, pid = int(os.environ[ENV_NUM_PROCESSES]), int(os.environ[ENV_PROCESS_ID])
  except ValueError as e:
    raise ConfigError(f'{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be integers ({e}).') from e
  if not 0 <= pid < num:
    raise ConfigError(f'{ENV_PROCESS_ID}={pid} is not in [0, {ENV_NUM_PROCESSES}={num}).')
  return dict(coordinator_address=os.environ[ENV_COORDINATOR], num_processes=num, process_id=pid)


def _wait_for_coordinator(address: str, timeout: float) -> None:
  """Polls host:port until it accepts a TCP connection; raises after ``timeout`` seconds.

  JAX aborts the whole process (no Python exception) when the coordinator stays unreachable, so
  processes other than 0 check first and fail with a message instead.
  """
  host, _, port = address.rpartition(':')
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host or 'localhost', int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise DistributedError(
            f'Cannot reach the coordinator at {address} ({e.strerror or e}) after {timeout:.0f}s. '
            f'Check that process 0 is running and that host and port are right '
            f'({ENV_COORDINATOR} / SLURM / TPU environment).') from None
      time.sleep(0.2)


def initialize_distributed(enabled: bool, timeout: float | None = None) -> None:
  """Connects this process to the others of a multi-host run (no-op for one process).

  Where the coordinator address, process count and id come from, first match wins:
    1. ``score_sde.launch``'s variables ``SCORE_SDE_COORDINATOR`` / ``_NUM_PROCESSES`` /
       ``_PROCESS_ID`` (they imply ``enabled``: processes of one launch must train together);
    2. with ``enabled`` (``training.distributed``): JAX's cluster detection — SLURM
       (``SLURM_*``, one task per host or per GPU), Cloud TPU pod slices, Open MPI, Kubernetes.
  ``timeout`` (default ``SCORE_SDE_INIT_TIMEOUT`` or 300 s) bounds the wait for all processes.
  Once connected, the processes watch each other (``heartbeat_timeout``).
  """
  explicit = _launcher_env()
  if not (enabled or explicit) or jax.distributed.is_initialized():
    return
  timeout = int(timeout or float(os.environ.get(ENV_INIT_TIMEOUT, 300)))
  lost_after = heartbeat_timeout()
  # JAX's own heartbeat aborts a process with a C++ stack (its callback cannot be set from
  # Python); ours (_Heartbeat) must see a lost process first.
  kwargs = dict(initialization_timeout=timeout,
                heartbeat_timeout_seconds=int(2 * lost_after + 10))
  if explicit:
    if explicit['process_id'] != 0:
      _wait_for_coordinator(explicit['coordinator_address'], timeout)
    else:
      _check_port_free(explicit['coordinator_address'])
    kwargs.update(explicit)
  jax.distributed.initialize(**kwargs)
  _Heartbeat.start(lost_after)


def port_in_use(port: int) -> str | None:
  """Why ``port`` cannot be served on this host (another program listens on it), or None."""
  with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as servers do: TIME_WAIT is free
    try:
      s.bind(('', port))
    except OSError as e:
      return e.strerror or str(e)
  return None


def _check_port_free(address: str) -> None:
  """Process 0 serves on ``address``'s port: a port already in use is one line, not JAX's
  crash ('Failed to start RPC server' or a segfault)."""
  port = int(address.rpartition(':')[2])
  reason = port_in_use(port)
  if reason:
    raise DistributedError(f'The coordinator port {port} ({ENV_COORDINATOR}={address}) is in '
                           f'use on this host ({reason}); choose a free port.')


def heartbeat_timeout() -> float:
  """Seconds after which a silent process of a multi-host run counts as lost:
  ``SCORE_SDE_HEARTBEAT_TIMEOUT``, default ``HEARTBEAT_TIMEOUT`` (60)."""
  value = os.environ.get(ENV_HEARTBEAT_TIMEOUT, str(HEARTBEAT_TIMEOUT))
  try:
    seconds = float(value)
  except ValueError:
    seconds = -1.0
  if not seconds > 0:
    raise ConfigError(f'{ENV_HEARTBEAT_TIMEOUT}={value!r} must be a positive number of seconds.')
  return seconds


class _Heartbeat:
  """The processes of a multi-host run watch each other through the coordination service.

  A thread in every process publishes a counter under ``score_sde/heartbeat/<id>`` every
  ``timeout / 10`` s and reads the others'. A process whose counter stands still for ``timeout``
  seconds, or a coordinator (process 0) that cannot be reached for that long, is lost: this
  process prints one line (the lost process, and ``lost_process_note()``, e.g. the last complete
  checkpoint) and exits with ``EXIT_LOST_PROCESS`` at once, even while its main thread waits in a
  collective that the lost process will never join. A process that ends normally publishes
  'done' (``finish_heartbeat``) and is no longer watched.
  """
  _running: '_Heartbeat | None' = None
  note: Callable[[], str] = staticmethod(lambda: '')

  def __init__(self, timeout: float):
    from jax._src import distributed   # the client's key-value store has no public wrapper
    state = distributed.global_state
    self.client, self.me, self.n = state.client, state.process_id, state.num_processes
    self.timeout = timeout
    self.lost = threading.Event()
    self.stopped = threading.Event()
    self.thread = threading.Thread(target=self._run, daemon=True, name='score_sde_heartbeat')

  @classmethod
  def start(cls, timeout: float) -> None:
    cls._running = beat = cls(timeout)
    beat.thread.start()
    # A process that exits without finish_heartbeat (an error) falls silent before JAX's own
    # exit handler waits for the others (atexit runs the later-registered handler first).
    atexit.register(beat.stopped.set)

  def _key(self, process: int) -> str:
    return f'score_sde/heartbeat/{process}'

  def _read(self, process: int) -> str | None:
    try:
      return self.client.key_value_try_get(self._key(process))
    except Exception as e:  # noqa: BLE001
      if 'NOT_FOUND' in str(e):   # not published yet
        return None
      raise

  def _run(self) -> None:
    interval = min(5.0, max(0.2, self.timeout / 10))
    start = contact = time.monotonic()
    watched = {p: (None, start) for p in range(self.n) if p != self.me}
    beat = 0
    while not self.stopped.wait(interval):
      beat += 1
      now = time.monotonic()
      try:
        self.client.key_value_set(self._key(self.me), str(beat), allow_overwrite=True)
        for p, (last, since) in list(watched.items()):
          value = self._read(p)
          if value == 'done':
            del watched[p]
          elif value != last:
            watched[p] = (value, now)
          elif now - since > self.timeout:
            self._lose(p, f'no heartbeat for {now - since:.0f} s')
        contact = now
      except Exception as e:  # noqa: BLE001  the coordination service is unreachable
        if 0 not in watched and self.me != 0:   # process 0 ended normally
          return
        if now - contact > self.timeout:
          self._lose(0, f'the coordinator has not answered for {now - contact:.0f} s: '
                        f'{str(e).splitlines()[0][:120]}')

  def _lose(self, process: int, why: str) -> None:
    self.lost.set()
    note = self.note()
    sys.stdout.flush()
    sys.stderr.write(f'Error: lost process {process} of {self.n} ({why}: it died or hangs); '
                     f'process {self.me} stops too.{" " + note if note else ""}\n')
    sys.stderr.flush()
    os._exit(EXIT_LOST_PROCESS)   # the main thread may be stuck in a collective: no cleanup


def set_lost_process_note(note: Callable[[], str]) -> None:
  """``note()`` ends the line printed when another process is lost (e.g. where to resume)."""
  _Heartbeat.note = staticmethod(note)


def finish_heartbeat() -> None:
  """Tells the other processes that this one ends normally (call when the work is done)."""
  beat = _Heartbeat._running
  if beat is not None:
    beat.stopped.set()
    beat.thread.join()
    beat.client.key_value_set(beat._key(beat.me), 'done', allow_overwrite=True)
    _Heartbeat._running = None


# What the errors of a collective or of the coordination service say when a peer is gone.
_PEER_FAILURES = ('gloo', 'connection', 'unavailable', 'deadline_exceeded', 'peer', 'socket',
                  'barrier', 'coordination')


def wait_if_process_lost(error: BaseException) -> None:
  """For an exception raised by a collective or the coordination service (a peer that died
  mid-step resets its connections): waits up to the heartbeat timeout for the heartbeat to
  confirm a lost process, which ends this one with its one line. Returns otherwise."""
  beat = _Heartbeat._running
  text = str(error).lower()
  if beat is None or not any(s in text for s in _PEER_FAILURES):
    return
  if beat.lost.wait(1.5 * beat.timeout + 5):
    # lost is set just before the heartbeat thread prints its line and ends the process with
    # os._exit: printing this exception now would interleave a traceback with that line.
    time.sleep(60)


def is_main_process() -> bool:
  """Process 0 writes logs, pictures, TensorBoard and metadata; all processes write checkpoints."""
  return jax.process_index() == 0


def digest(text: str) -> np.ndarray:
  """64 bits of sha256(text) as two int32 (what ``process_allgather`` carries exactly)."""
  return np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int32)


def check_same_on_all_processes(text: str, what: str = 'config') -> None:
  """Raises ``ConfigError`` unless every process passed the same ``text`` (compared by hash)."""
  if jax.process_count() == 1:
    return
  hashes = np.asarray(multihost_utils.process_allgather(digest(text)))
  hashes = hashes.reshape(jax.process_count(), -1)
  differ = [i for i in range(len(hashes)) if not np.array_equal(hashes[i], hashes[0])]
  if differ:
    raise ConfigError(f'Processes {differ} run a different {what} from process 0; start every '
                      f'process with the same command and files.')


def barrier(name: str, timeout_s: float = 3600) -> None:
  """Waits until every process reaches ``barrier(name)`` (no-op for one process).

  A host-side barrier of the coordination service (what orbax uses), not a device collective:
  CPU collectives (gloo) give up after 30 s if one process reaches them that much later.
  """
  if jax.process_count() == 1:
    return
  from orbax.checkpoint import multihost   # the coordination service's barrier, as orbax uses it
  multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


class _CompiledTogether:
  """A jitted function whose first call compiles on every process, then meets at a barrier.

  Processes compile at different speeds (a loaded machine, a slower host); without the barrier
  the first to finish waits for the others inside the function's first collective, which gloo
  (CPU) abandons after 30 s. One process: the jitted function itself.
  """
  _count = 0

  def __init__(self, jitted: Callable, name: str):
    self._jitted, self._name, self._compiled = jitted, name, None

  def compile(self, *args) -> Callable:
    """Compiles for ``args`` now (on every process, then the barrier); later calls reuse it."""
    if self._compiled is None:
      self._compiled = self._jitted.lower(*args).compile()
      _CompiledTogether._count += 1
      barrier(f'score_sde_compiled_{self._name}_{_CompiledTogether._count}')
    return self._compiled

  def __call__(self, *args):
    if jax.process_count() == 1 and self._compiled is None:
      return self._jitted(*args)
    return self.compile(*args)(*args)


def any_process(flag: bool) -> Any:
  """True on every process if ``flag`` is True on any of them (a collective: call on all).

  Returns a Python bool for one process; otherwise a device scalar, so that the caller can read
  it one loop iteration later instead of waiting for the collective now.
  """
  if jax.process_count() == 1:
    return bool(flag)
  return _any_process(np.full((jax.local_device_count(),), flag, bool))


def _any_process(local_flags: np.ndarray) -> jax.Array:
  mesh = make_mesh()
  flags = jax.make_array_from_process_local_data(NamedSharding(mesh, P(AXIS)), local_flags)
  return _any_fn(mesh)(flags)


@functools.cache
def _any_fn(mesh: Mesh) -> Callable:
  return _CompiledTogether(jax.jit(jnp.any, out_shardings=NamedSharding(mesh, P())), 'any')


class AgreedFlag:
  """A flag that every process sees turn True at the same loop iteration.

  ``update(local)`` is called once per iteration on every process; it returns True once any
  process has passed ``local=True``. One process: ``local`` itself. Several: the all-reduce
  dispatched at the previous call (one iteration late, so the loop does not wait for it).
  """

  def __init__(self):
    self._pending: Any = False

  def update(self, local: bool) -> bool:
    if jax.process_count() == 1:
      return bool(local)
    agreed = bool(self._pending)
    self._pending = any_process(local)
    return agreed


def gather_hosts(x: np.ndarray) -> np.ndarray:
  """Concatenates every host's (n_i, ...) array in process order; n_i may differ across hosts."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  counts = np.asarray(multihost_utils.process_allgather(np.asarray([len(x)]))).reshape(-1)
  padded = np.zeros((int(counts.max()),) + x.shape[1:], x.dtype)
  padded[:len(x)] = x
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([g[:int(c)] for g, c in zip(gathered, counts)])


# ---------------------------------------------------------------------------------------------
# Devices and batches


def local_devices(num: int | None = None) -> list:
  """The first ``num`` local devices (all of them by default)."""
  devices = jax.local_devices()
  if num is not None:
    if not 1 <= num <= len(devices):
      raise ConfigError(f'Asked for {num} devices; this host has {len(devices)}.')
    devices = devices[:num]
  return devices


def _format_bytes(n: float) -> str:
  for unit in ('B', 'KiB', 'MiB', 'GiB'):
    if n < 1024:
      break
    n /= 1024
  return f'{n:.0f} B' if unit == 'B' else f'{n:.1f} {unit}'


def device_memory(device) -> tuple[int, str] | None:
  """(bytes of memory, where the figure comes from) of ``device``: ``SCORE_SDE_DEVICE_MEMORY``
  if set, else what the device reports (GPU / TPU); None if neither (CPU)."""
  configured = os.environ.get(ENV_DEVICE_MEMORY)
  if configured:
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*', configured, re.I)
    if not match:
      raise ConfigError(f"{ENV_DEVICE_MEMORY}={configured!r}: give bytes, e.g. '16G' or '512M'.")
    power = ' KMGT'.index(match.group(2).upper() or ' ')
    return int(float(match.group(1)) * 1024 ** power), ENV_DEVICE_MEMORY
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit']), 'its memory'
  return None


def check_memory(compiled, what: str, asked: str, advice: str) -> None:
  """``OutOfMemoryError`` if the compiled (``jit(...).lower(...).compile()``) step needs more
  memory per device than ``device_memory`` says a device has: arguments, outputs and
  temporaries of XLA's memory analysis, less what donation reuses. The message says ``what``
  ('The train step'), what was ``asked`` ('training.batch_size=512, 64 per device') and
  ``advice``: the settings that reduce it."""
  device = jax.local_devices()[0]
  limit = device_memory(device)
  stats = compiled.memory_analysis() if limit is not None else None
  if stats is None:
    return
  need = max(getattr(stats, 'peak_memory_in_bytes', 0),
             stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  if need > limit[0]:
    raise OutOfMemoryError(
        f'{what} needs {_format_bytes(need)} per device ({asked}); {device.platform}:{device.id} '
        f'has {_format_bytes(limit[0])} ({limit[1]}). {advice}')


def out_of_memory(error: BaseException, what: str, asked: str,
                  advice: str) -> OutOfMemoryError | None:
  """The one-line ``OutOfMemoryError`` for XLA's out-of-memory error at run time (the check
  before the first step could not know: no ``device_memory``), else None."""
  text = str(error)
  if 'RESOURCE_EXHAUSTED' not in text and 'Out of memory' not in text:
    return None
  return OutOfMemoryError(f'{what} ran out of device memory ({asked}): '
                          f'{text.strip().splitlines()[0][:200]}. {advice}')


def make_mesh(devices: Sequence | None = None) -> Mesh:
  """A one-axis mesh (``AXIS``) over ``devices``: by default every device of every host.

  A subset of devices is for single-process use (tests, benchmarks).
  """
  if devices is None:
    devices = jax.devices()
  elif jax.process_count() > 1 and len(devices) != jax.device_count():
    raise ConfigError(f'A multi-host run uses all {jax.device_count()} devices; '
                      f'got a list of {len(devices)}.')
  return _mesh(tuple(devices))


@functools.cache
def _mesh(devices: tuple) -> Mesh:
  return Mesh(np.asarray(devices), (AXIS,))


def per_device_batch_size(global_batch_size: int, num_local_devices: int | None = None) -> int:
  """global batch / (processes x local devices), with a clear error if it does not divide."""
  n_local = num_local_devices or jax.local_device_count()
  n = n_local * jax.process_count()
  if global_batch_size % n:
    raise ConfigError(f'Batch size {global_batch_size} is not divisible by the number of devices '
                      f'({n} = {jax.process_count()} hosts x {n_local} local devices); choose a '
                      f'multiple of {n}.')
  return global_batch_size // n


def replicate_global(tree: Any, mesh: Mesh) -> Any:
  """Host values (the same on every process) -> global arrays replicated over ``mesh``."""
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(
      lambda a: jax.make_array_from_callback(np.shape(a), sharding, lambda _: np.asarray(a)),
      jax.device_get(tree))


def replicated_call(fn: Callable, mesh: Mesh) -> Callable:
  """``jit(fn)`` whose outputs are global arrays replicated over ``mesh`` (e.g. initial state)."""
  return jax.jit(fn, out_shardings=NamedSharding(mesh, P()))


def to_local(tree: Any) -> Any:
  """Global replicated arrays -> this host's copy (single-device arrays, on its first device)."""
  return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)


def put_batch(batch: Any, mesh: Mesh, stacked: bool = False) -> Any:
  """This host's batch -> global arrays sharded over ``mesh`` along the example axis.

  Leaves are (num_local_devices, b, ...) (the datasets' device layout), or with ``stacked``
  (n_steps, num_local_devices, b, ...); the global arrays are (B, ...) or (n_steps, B, ...) with
  B = b x all devices, host h holding rows h*B/H to (h+1)*B/H - 1 (H hosts, in process order).
  """
  spec = P(None, AXIS) if stacked else P(AXIS)

  def put(a):
    a = np.asarray(a)
    lead = a.shape[:1] if stacked else ()
    local = a.reshape(lead + (-1,) + a.shape[len(lead) + 2:])
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)
  return jax.tree.map(put, batch)


def stack_batches(batches: Sequence[Any]) -> Any:
  """n_steps host batches -> one with a leading n_steps axis (for ``n_steps > 1`` steps)."""
  return jax.tree.map(lambda *a: np.stack(a), *batches)


def data_parallel_step(step_fn: Callable, mesh: Mesh, donate: bool = True,
                       n_steps: int = 1) -> Callable:
  """``step(state, batch, rng) -> (state, metrics)`` on every device of ``mesh``.

  ``step_fn(state, batch, rng, axis_name=...)`` sees this device's slice of the batch; it must
  ``pmean`` gradients and metrics over ``axis_name`` (``losses.get_step_fn`` does), so the state
  stays one replica. ``state``/``rng`` are replicated, ``batch`` global (B, ...) sharded along B
  (``put_batch``). With ``n_steps > 1`` the batch is (n_steps, B, ...) and ``lax.scan`` runs the
  steps in one device call; metrics are the last step's. With ``donate`` the input state's
  buffers are reused for the output (the caller must not touch the old state again).
  """
  def per_device(state, batch, rng):
    step = functools.partial(step_fn, rng=rng, axis_name=AXIS)
    if n_steps == 1:
      return step(state, batch)
    state, metrics = jax.lax.scan(lambda s, b: step(s, b), state, batch)
    return state, jax.tree.map(lambda m: m[-1], metrics)
  batch_spec = P(AXIS) if n_steps == 1 else P(None, AXIS)
  # check_vma=False: pmap's semantics. With it on, differentiating a per-device loss with respect
  # to the replicated (invariant) parameters already sums the gradients over devices, and the
  # step's own pmean would then return the sum, not the mean.
  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), batch_spec, P()),
                         out_specs=(P(), P()), check_vma=False)
  return _CompiledTogether(jax.jit(mapped, donate_argnums=(0,) if donate else ()), 'step')


class Prefetcher:
  """Global device batches from a host iterator, prepared by a thread ``size`` items ahead.

  Item i is ``put_batch`` of ``sizes[i]`` batches of ``it`` (stacked when more than one, for
  ``data_parallel_step(..., n_steps=sizes[i])``). Host work (the pipeline, the transfer to the
  devices) overlaps the device step. ``get_state()`` is ``it``'s position after the last item
  *returned*, not after the prefetched ones, so a checkpoint resumes where training stopped.
  """

  def __init__(self, it: Iterator, mesh: Mesh, sizes: Sequence[int], size: int = 2):
    self._it, self._mesh, self._sizes = it, mesh, list(sizes)
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._state = it.get_state()
    self._closed = threading.Event()
    self._thread = threading.Thread(target=self._fill, daemon=True)
    self._thread.start()

  def _fill(self):
    try:
      for n in self._sizes:
        if self._closed.is_set():
          return
        batches = [next(self._it) for _ in range(n)]
        stacked = n > 1
        batch = stack_batches(batches) if stacked else batches[0]
        item = (put_batch(batch, self._mesh, stacked), self._it.get_state())
        while not self._closed.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            pass
    except BaseException as e:  # noqa: BLE001 -- re-raised in the consumer's thread
      self._queue.put((e, None))

  def __iter__(self):
    return self

  def __next__(self):
    batch, state = self._queue.get()
    if isinstance(batch, BaseException):
      raise batch
    self._state = state
    return batch

  def get_state(self) -> dict:
    return self._state

  def close(self):
    self._closed.set()
    self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Host layout (num_local_devices, ...) of the datasets; sampling and evaluation


def shard(x: Any, num_devices: int) -> Any:
  """(B, ...) -> (num_devices, B / num_devices, ...) for every leaf."""
  return jax.tree.map(lambda a: a.reshape((num_devices, -1) + a.shape[1:]), x)


def unshard(x: Any) -> Any:
  """(num_devices, b, ...) -> (num_devices * b, ...) for every leaf."""
  return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), x)


def pmean(x: Any, axis_name: str | None) -> Any:
  """Mean over the device axis inside a mapped function; identity outside one."""
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def device_index(axis_name: str | None) -> jax.Array:
  """This device's position on the axis, counted over all hosts (0 outside a mapped function)."""
  return jnp.zeros((), jnp.int32) if axis_name is None else jax.lax.axis_index(axis_name)


def host_local_slice(n: int) -> slice:
  """This host's share of n globally indexed items."""
  per_host = n // jax.process_count()
  start = jax.process_index() * per_host
  return slice(start, start + per_host)


def to_host(x: Any) -> Any:
  return jax.tree.map(np.asarray, jax.device_get(x))


def per_example_step(step_fn: Callable, mesh: Mesh) -> Callable:
  """``step(params, batch, rng) -> outputs``: ``step_fn(params, batch, rng, axis_name=...)``
  on every device's slice of the global batch, its per-example outputs ((b, ...) leaves)
  forming global (B, ...) arrays (``fetch`` brings them to every host). For evaluation: nothing
  is reduced or donated."""
  def per_device(params, batch, rng):
    return step_fn(params, batch, rng, axis_name=AXIS)
  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P(AXIS),
                         check_vma=False)
  return _CompiledTogether(jax.jit(mapped), 'eval')


def fetch(x: jax.Array) -> np.ndarray:
  """A global array sharded over the mesh -> the whole array on every host (numpy)."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def local_map(fn: Callable, batch_size: int) -> Callable:
  """``call(params, x) -> fn(params, x)`` for numpy x (N, ...), in chunks of ``batch_size``
  split over this host's devices (params replicated), as numpy (N, ...). Each host runs it on
  its own data (e.g. encoding its own shards of a dataset): no collective, no barrier."""
  mesh = Mesh(np.asarray(jax.local_devices()), (AXIS,))
  n = len(jax.local_devices())
  chunk = -(-batch_size // n) * n
  mapped = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS),
                                 check_vma=False))

  def call(params, x):
    out = []
    for start in range(0, len(x), chunk):
      part = np.asarray(x[start:start + chunk])
      pad = np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)
      out.append(np.asarray(mapped(params, np.concatenate([part, pad])))[:len(part)])
    return np.concatenate(out)
  return call


def sampling_step(fn: Callable, mesh: Mesh) -> Callable:
  """``step(params, inputs, rng) -> (samples, nfe)`` on every device of ``mesh``.

  ``fn(params, inputs, rng)`` sees the replicated params, this device's slice of the
  per-example ``inputs`` (global (B, ...) arrays sharded along B, ``put_batch``) and its own key
  (``rng`` folded with the global device index, so every device of every host draws different
  samples); its (b, ...) samples form the global (B, ...) output. The same shard_map over the
  mesh as ``data_parallel_step``.
  """
  def per_device(params, inputs, rng):
    return fn(params, inputs, jax.random.fold_in(rng, jax.lax.axis_index(AXIS)))
  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS), P()),
                         out_specs=(P(AXIS), P()), check_vma=False)
  return _CompiledTogether(jax.jit(mapped), 'sample')
