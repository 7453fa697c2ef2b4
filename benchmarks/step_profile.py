"""Where one training step's time goes, ours vs the paper's code: XLA op time by kind.

Usage:
  .venv/bin/python benchmarks/step_profile.py [--configs=vp/cifar10_ddpmpp_continuous]
      [--batch=2] [--no-paper] [--trace_dir=DIR]

Builds the same two steps as ``benchmarks/train_step.py`` (ours; the paper's model and loss with
our optimizer), compiles each, runs three warm-up steps and traces one with ``jax.profiler``
(XLA:CPU thunk events, ``--xla_cpu_enable_xprof_traceme``). Every traced XLA op is matched to its
instruction in the compiled HLO and counted under one kind, the first that its (fused) body holds:

  convolution   a convolution (on CPU: YNNPACK / Eigen), forward or gradient
  dot           a matrix multiply (attention, NIN, dense layers)
  layout        transposes and copies only (e.g. the reversed, transposed kernels that the
                input-gradient convolutions read)
  reduction     reductions (norm statistics, the loss, the gradient norm)
  elementwise   everything else that XLA fused (activations, Adam, EMA, RNG)
  loop          while loops

and the table gives each kind's op time (summed over threads), its share, and how busy the
CPU's threads were: op time / (step wall time x threads).
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

if '--xla_cpu_enable_xprof_traceme' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_enable_xprof_traceme=true').strip()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import train_step  # noqa: E402

KINDS = ('convolution', 'dot', 'layout', 'reduction', 'elementwise', 'loop')
_LAYOUT_OPS = {'transpose', 'copy', 'bitcast', 'reshape', 'parameter', 'reverse', 'broadcast',
               'slice', 'concatenate', 'pad', 'constant', 'tuple', 'get-tuple-element'}


def hlo_index(hlo_text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
  """(instruction name -> its opcode or called computation, computation -> its opcodes)."""
  instructions, computations, current = {}, {}, None
  for line in hlo_text.splitlines():
    header = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if header:
      current = header.group(1)
      computations[current] = []
      continue
    op = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = .*? ([a-z][\w\-]*)\(', line)
    if op is None:
      continue
    called = re.search(r'calls=%?([\w.\-]+)', line)
    instructions[op.group(1)] = called.group(1) if called else op.group(2)
    if current is not None:
      computations[current].append(op.group(2))
  return instructions, computations


def kind_of(name: str, instructions, computations) -> str | None:
  """The kind of the traced op ``name`` (None: not an HLO op, e.g. the runtime's own events)."""
  if name not in instructions:
    return None
  target = instructions[name]
  ops = set(computations.get(target, [target]))
  if 'convolution' in ops:
    return 'convolution'
  if 'dot' in ops:
    return 'dot'
  if 'while' in ops:
    return 'loop'
  if ops <= _LAYOUT_OPS:
    return 'layout'
  if ops & {'reduce', 'reduce-window'}:
    return 'reduction'
  return 'elementwise'


def profile(step, state, batch, rng, trace_dir):
  """(wall seconds of the traced step, {kind: [op microseconds, count]}, busy threads)."""
  jitted = jax.jit(step, donate_argnums=0)
  state = jax.tree.map(lambda a: jnp.array(a, copy=True), state)
  compiled = jitted.lower(state, batch, rng).compile()
  for _ in range(3):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  jax.profiler.start_trace(trace_dir)
  start = time.perf_counter()
  state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  wall = time.perf_counter() - start
  jax.profiler.stop_trace()
  path = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True),
                key=os.path.getmtime)[-1]
  events = json.load(gzip.open(path))['traceEvents']
  instructions, computations = hlo_index(compiled.as_text())
  totals = collections.defaultdict(lambda: [0.0, 0])
  threads = set()
  for event in events:
    if event.get('ph') != 'X':
      continue
    kind = kind_of(event['name'], instructions, computations)
    if kind is not None:
      totals[kind][0] += event['dur']
      totals[kind][1] += 1
      threads.add((event['pid'], event['tid']))
  return wall, totals, len(threads)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', default='vp/cifar10_ddpmpp_continuous')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--paper_git', default=train_step.PAPER_GIT)
  parser.add_argument('--no-paper', dest='with_paper', action='store_false')
  parser.add_argument('--trace_dir', default=None)
  args = parser.parse_args()
  trace_root = args.trace_dir or tempfile.mkdtemp(prefix='score_sde_profile_')
  paper_modules = (train_step.import_paper(train_step.paper_checkout(None, args.paper_git))
                   if args.with_paper else None)
  print(f'# {time.strftime("%Y-%m-%d %H:%M")}  {os.cpu_count()} CPUs, JAX {jax.__version__} on '
        f'{jax.devices()[0].device_kind}, load average {os.getloadavg()[0]:.1f}; one traced step '
        f'after three warm-up steps; traces in {trace_root}')
  print('| config | code | batch | step (s) | ' + ' | '.join(f'{k} ms (%, ops)' for k in KINDS)
        + ' | op time (ms) | busy threads |')
  print('|---|---|---|---|' + '---|' * len(KINDS) + '---|---|')
  for name in args.configs.split(','):
    config = train_step.load_config(name, args.batch)
    builds = [('ours', train_step.build_ours(config))]
    if paper_modules is not None:
      builds.append(('paper', train_step.build_paper(train_step.load_config(name, args.batch),
                                                     paper_modules)))
    for code, (step, state, _) in builds:
      trace_dir = os.path.join(trace_root, f'{name.replace("/", "_")}_{code}')
      wall, totals, n_threads = profile(step, state, train_step._batch(config, args.batch),
                                        jax.random.PRNGKey(2), trace_dir)
      op_time = sum(t for t, _ in totals.values())
      cells = [f'{totals[k][0] / 1e3:.1f} ({totals[k][0] / op_time:.0%}, {totals[k][1]})'
               for k in KINDS]
      busy = op_time / 1e6 / (wall * max(n_threads, 1))
      print(f'| {name} | {code} | {args.batch} | {wall:.3f} | ' + ' | '.join(cells) +
            f' | {op_time / 1e3:.0f} | {busy:.0%} of {n_threads} |', flush=True)


if __name__ == '__main__':
  main()
