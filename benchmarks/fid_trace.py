"""FID's cross term tr((sigma1 sigma2)^{1/2}) on 2048-d covariances: three ways, time and agreement.

  sqrtm        scipy.linalg.sqrtm(sigma1 @ sigma2), trace of the real part (pytorch-fid; the
               route ``metrics.frechet_distance`` took before ``matrix_sqrt``)
  eigvals      sum sqrt(eigvals(sigma1 @ sigma2)) of the non-symmetric product (torch-fidelity)
  eigh         ``matrix_sqrt.trace_sqrt_product``: eigh of sigma1, eigvalsh of
               sigma1^{1/2} sigma2 sigma1^{1/2} (ours)

Three cases, 2048-d:
  n=10000      covariance of 10,000 Gaussian features whose standard deviations fall as 1/k in
               a random basis (eigenvalues 1 .. ~2e-7: condition ~4e6, full rank)
  n=1000       the same from 1,000 features: singular (fewer samples than dimensions), the
               case pytorch-fid patches with a 1e-6 diagonal offset when sqrtm fails
  exact        S1 = U diag(a) U^T, S2 = U diag(b) U^T (U a random rotation) with a, b
               log-spaced over 1 .. 1e-10 in random order, a quarter of each set to exact
               zeros (singular and ill-conditioned): tr sqrt(S1 S2) = sum sqrt(a b) exactly, so
               each method's error is measured, not only their agreement
Usage: python benchmarks/fid_trace.py [--dim 2048] [--repeats 1] [--cases n=10000,n=1000,exact]
Each method keeps its best of ``--repeats`` runs; wall and CPU (process, all threads) seconds:
on a shared machine the CPU seconds are the steadier figure.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from score_sde.evaluation import matrix_sqrt  # noqa: E402


def by_sqrtm(s1, s2):
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    return float(np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)


def by_eigvals(s1, s2):
  return float(np.sqrt(scipy.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum())


METHODS = {'sqrtm': by_sqrtm, 'eigvals': by_eigvals, 'eigh': matrix_sqrt.trace_sqrt_product}


def covariance(rng, n: int, dim: int) -> np.ndarray:
  q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  scales = 1.0 / np.arange(1, dim + 1, dtype=np.float64)      # eigenvalues ~ k^-2
  x = (rng.standard_normal((n, dim)) * scales) @ q.T
  return np.cov(x, rowvar=False)


def commuting_pair(rng, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
  q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  a, b = rng.permutation(np.logspace(0, -10, dim)), rng.permutation(np.logspace(0, -10, dim))
  a[rng.choice(dim, dim // 4, replace=False)] = 0.0
  b[rng.choice(dim, dim // 4, replace=False)] = 0.0
  return (q * a) @ q.T, (q * b) @ q.T, float(np.sqrt(a * b).sum())


def cases(rng, dim: int):
  for n in (10000, 1000):
    yield f'n={n}', covariance(rng, n, dim), covariance(rng, n, dim), None
  yield ('exact',) + commuting_pair(rng, dim)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--dim', type=int, default=2048)
  parser.add_argument('--repeats', type=int, default=1)
  parser.add_argument('--cases', default='n=10000,n=1000,exact', help='comma-separated subset')
  args = parser.parse_args()
  print(f'# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
        f'numpy {np.__version__}, scipy {scipy.__version__}, dim {args.dim}')
  rng = np.random.default_rng(0)
  print('| covariances | method | wall s | CPU s | tr sqrt(S1 S2) | rel. diff. to sqrtm | rel. error |')
  print('|---|---|---|---|---|---|---|')
  for case, s1, s2, exact in cases(rng, args.dim):
    if case not in args.cases.split(','):
      continue
    values = {}
    for name, fn in METHODS.items():
      best, best_cpu = float('inf'), float('inf')
      for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        values[name] = fn(s1, s2)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
      rel = abs(values[name] / values['sqrtm'] - 1)
      err = '' if exact is None else f'{abs(values[name] / exact - 1):.1e}'
      print(f'| {case} | {name} | {best:.2f} | {best_cpu:.2f} | {values[name]:.12g} | {rel:.1e} '
            f'| {err} |', flush=True)

if __name__ == '__main__':
  main()
