"""Sample-quality metrics from network features: FID, KID and Inception Score.

All three take features (or logits) already computed by a feature network (``inception.py``
for images) and run in float64 numpy on the host. They follow the reference implementations
whose numbers papers report: pytorch-fid (FID), Bińkowski et al. 2018 / torch-fidelity (KID),
Salimans et al. 2016 / torch-fidelity (IS).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.special

from score_sde.errors import ConfigError, DataError
from score_sde.evaluation import matrix_sqrt

FID_EPS = 1e-6             # pytorch-fid's diagonal offset for a singular covariance product
IMAG_ATOL = 1e-3           # pytorch-fid's tolerance on the imaginary part of sqrt(sigma1 sigma2)


def _as_matrix(x, name: str, min_rows: int = 1) -> np.ndarray:
  """``x`` as a finite float64 (n, d) array with n >= min_rows, else ``DataError``."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise DataError(f'{name} must be a 2-D (num_examples, dim) array, got shape {x.shape}')
  if x.shape[0] < min_rows or x.shape[1] < 1:
    raise DataError(f'{name} needs at least {min_rows} rows and 1 column, got shape {x.shape}')
  if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
    raise DataError(f'{name} must be a real numeric array, got dtype {x.dtype}')
  x = x.astype(np.float64)
  if not np.isfinite(x).all():
    raise DataError(f'{name} contains {np.size(x) - np.isfinite(x).sum()} non-finite values')
  return x


def _as_vector(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 1:
    raise DataError(f'{name} must be a 1-D (dim,) array, got shape {x.shape}')
  return _as_matrix(x[None], name)[0]


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean (d,) and unbiased covariance (d, d) of features (n, d), float64, n >= 2.

  As pytorch-fid: ``mu = mean(features, 0)``, ``sigma = cov(features, rowvar=False)`` (1/(n-1)).
  """
  features = _as_matrix(features, 'features', min_rows=2)
  return features.mean(0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def _sqrtm(a: np.ndarray) -> np.ndarray:
  # A singular product (fewer samples than features) makes scipy warn; pytorch-fid asks it not
  # to (disp=False) and, as here, checks the root itself.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    return scipy.linalg.sqrtm(a)


def trace_sqrt_pytorch_fid(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr((sigma1 sigma2)^{1/2}) exactly as pytorch-fid takes it (``scipy.linalg.sqrtm`` of the
  product): if the root is not finite (a singular product), 1e-6 is added to both diagonals
  and the root taken again; a complex root whose diagonal has an imaginary part above 1e-3 is
  an error, smaller imaginary parts (round-off) are dropped. About twice trace_sqrt_product's time."""
  covmean = _sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(len(sigma1)) * FID_EPS
    covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
      raise DataError('frechet_distance: sqrt(sigma1 sigma2) has an imaginary component of '
                      f'{np.abs(covmean.imag).max():.3g}; are the covariances positive '
                      'semi-definite?')
    covmean = covmean.real
  return float(np.trace(covmean))


# How tr((sigma1 sigma2)^{1/2}) is computed: 'eigh' (default; ``matrix_sqrt``) or 'sqrtm'
# (pytorch-fid's route, for numbers bit-identical with it).
TRACE_SQRT = {'eigh': matrix_sqrt.trace_sqrt_product, 'sqrtm': trace_sqrt_pytorch_fid}


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = 'eigh') -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID on Inception features).

      d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})

  mu: (d,), sigma: (d, d), float64. The trace of the root is taken by ``TRACE_SQRT[method]``:
  'eigh' from symmetric eigendecompositions (``matrix_sqrt.trace_sqrt_product``: about half
  sqrtm's time on 2048-d covariances, equal to scipy's sqrtm to ~1e-8 relative or closer, defined for singular
  covariances); 'sqrtm' as pytorch-fid (``trace_sqrt_pytorch_fid``), for bit-identical numbers.
  """
  if method not in TRACE_SQRT:
    raise ConfigError(f'Unknown frechet_distance method {method!r}; valid: {sorted(TRACE_SQRT)}.')
  mu1, mu2 = _as_vector(mu1, 'mu1'), _as_vector(mu2, 'mu2')
  sigma1, sigma2 = _as_matrix(sigma1, 'sigma1'), _as_matrix(sigma2, 'sigma2')
  d = mu1.shape[0]
  for name, arr, shape in (('mu2', mu2, (d,)), ('sigma1', sigma1, (d, d)),
                           ('sigma2', sigma2, (d, d))):
    if arr.shape != shape:
      raise DataError(f'{name} has shape {arr.shape}; with mu1 of shape {(d,)} it must be {shape}')
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2 * TRACE_SQRT[method](sigma1, sigma2))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """k(x, y) = (x . y / d + 1)^3 for rows of x (n, d), y (m, d): (n, m). KID's kernel."""
  return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  """Unbiased MMD^2 estimate between samples x (m, d) and y (m, d) with the cubic kernel.

      MMD^2_u = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1))
                - 2 sum_{i, j} k(x_i, y_j) / m^2

  (Bińkowski et al. 2018, eq. 3; torch-fidelity's 'unbiased' estimator, which keeps the
  diagonal of the cross term.)
  """
  m = x.shape[0]
  k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
  within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
  return float(within / (m * (m - 1)) - 2 * k_xy.sum() / m ** 2)


def kid(features_a, features_b, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance: mean and standard error of MMD^2_u over random subsets.

  features_a: (n_a, d), features_b: (n_b, d). As torch-fidelity: each of ``num_subsets``
  subsets draws ``subset_size`` rows of each set without replacement (independently across
  subsets) and computes the unbiased MMD^2 with k(x, y) = (x . y / d + 1)^3 (``mmd2_unbiased``).
  Returns (mean, std / sqrt(num_subsets)) with the sample std (ddof=1) of the subset values.
  Each subset value is an unbiased estimate of the population MMD^2; the standard error is
  honest when the subsets do not overlap (num_subsets * subset_size <= n) and a lower bound
  otherwise. torch-fidelity reports the std itself (std_error * sqrt(num_subsets)).
  """
  a = _as_matrix(features_a, 'features_a', min_rows=2)
  b = _as_matrix(features_b, 'features_b', min_rows=2)
  if a.shape[1] != b.shape[1]:
    raise DataError(f'features_a and features_b have different dims: {a.shape[1]} vs '
                    f'{b.shape[1]}')
  if num_subsets < 2:
    raise DataError(f'num_subsets must be >= 2 for a standard error, got {num_subsets}')
  n = min(a.shape[0], b.shape[0])
  if not 2 <= subset_size <= n:
    raise DataError(f'subset_size={subset_size} must be in [2, {n}]: the smaller feature set '
                    f'has {n} rows')
  rng = np.random.default_rng(seed)
  mmds = np.array([
      mmd2_unbiased(a[rng.choice(a.shape[0], subset_size, replace=False)],
                    b[rng.choice(b.shape[0], subset_size, replace=False)])
      for _ in range(num_subsets)])
  return float(mmds.mean()), float(mmds.std(ddof=1) / np.sqrt(num_subsets))


def _in_order(n: int, splits: int) -> list[np.ndarray]:
  return np.array_split(np.arange(n), splits)


def _torch_fidelity(n: int, splits: int) -> list[np.ndarray]:
  order = np.random.RandomState(2020).permutation(n)    # torch-fidelity's default shuffle
  return [order[i * n // splits:(i + 1) * n // splits] for i in range(splits)]


# How inception_score cuts n examples into splits: index arrays, one per split.
IS_SPLIT_RULES = {'in_order': _in_order, 'torch_fidelity': _torch_fidelity}


def inception_score(logits, splits: int = 10, split_rule: str = 'in_order'
                    ) -> tuple[float, float]:
  """Inception Score exp(E_x KL(p(y|x) || p(y))): mean and std over ``splits`` splits.

  logits: (n, classes), p(y|x) = softmax(logits). ``split_rule`` cuts the n examples into
  ``splits`` parts (``IS_SPLIT_RULES``): 'in_order' (default) in sample order by np.array_split
  (the first n mod splits parts one longer); 'torch_fidelity' as torch-fidelity (shuffled by
  RandomState(2020), part i = [i n // splits, (i + 1) n // splits)). In each part p(y) is the
  mean of p(y|x) and the score exp(mean_x sum_y p(y|x) (log p(y|x) - log p(y))). Returns the
  mean and (population) std of the split scores, as Salimans et al. 2016 and torch-fidelity.
  The paper's code (TF-GAN ``classifier_score_from_logits``) scored all samples at once:
  ``splits=1``. For the paper-comparable IS, pass the FID Inception's 1008 logits without the
  bias (``inception.logits_unbiased``), as the original TF code did.
  """
  logits = _as_matrix(logits, 'logits')
  if not 1 <= splits <= logits.shape[0]:
    raise DataError(f'splits={splits} must be in [1, {logits.shape[0]}] (the number of examples)')
  if split_rule not in IS_SPLIT_RULES:
    raise ConfigError(f'Unknown IS split rule {split_rule!r}; valid: {sorted(IS_SPLIT_RULES)}.')
  log_p = scipy.special.log_softmax(logits, axis=1)
  scores = []
  for index in IS_SPLIT_RULES[split_rule](len(log_p), splits):
    part = log_p[index]
    log_py = scipy.special.logsumexp(part, axis=0) - np.log(part.shape[0])
    kl = (np.exp(part) * (part - log_py)).sum(1).mean()
    scores.append(np.exp(kl))
  return float(np.mean(scores)), float(np.std(scores))


# ------------------------------------------------------------------------------------------------
# Image metrics by name (the evaluation loop's, the experiments'): name -> fn(features, reference,
# options) -> {'value', 'std_err', ...} or None where the reference lacks what it needs.
# ``features``: the samples' Inception outputs {'pool_3': (N, 2048), 'logits_unbiased': (N,
# 1008)}; ``reference``: the data's statistics (``reference_stats.ReferenceStats``: mu, sigma,
# optional pool_3); ``options``: ``IMAGE_METRIC_OPTIONS`` keys.
# ------------------------------------------------------------------------------------------------

IMAGE_METRIC_OPTIONS = {
    'kid_subsets': 100,
    'kid_subset_size': 1000,       # capped by the number of samples
    'is_splits': 10,               # capped by the number of samples; 1: the paper's protocol
    'is_split_rule': 'in_order',   # IS_SPLIT_RULES
}


def _fid(features, reference, options) -> dict:
  del options
  mu, sigma = feature_statistics(np.asarray(features['pool_3'], np.float64))
  return {'value': frechet_distance(mu, sigma, reference.mu, reference.sigma), 'std_err': None}


def _kid(features, reference, options) -> dict | None:
  if reference.pool_3 is None:   # pytorch-fid's and the paper's statistics hold no features
    return None
  pool_3 = np.asarray(features['pool_3'], np.float64)
  size = min(options['kid_subset_size'], len(pool_3), len(reference.pool_3))
  value, se = kid(pool_3, reference.pool_3, num_subsets=options['kid_subsets'], subset_size=size)
  return {'value': value, 'std_err': se}


def _is(features, reference, options) -> dict:
  del reference
  logits = features['logits_unbiased']
  value, std = inception_score(logits, splits=min(options['is_splits'], len(logits)),
                               split_rule=options['is_split_rule'])
  return {'value': value, 'std_err': None, 'std_over_splits': std}


IMAGE_METRICS = {'fid': _fid, 'kid': _kid, 'is': _is}


def image_metrics(features, reference, options: dict | None = None,
                  names=tuple(IMAGE_METRICS)) -> dict:
  """The ``IMAGE_METRICS`` entries ``names`` that the reference supports, by name; ``options``
  override ``IMAGE_METRIC_OPTIONS``."""
  options = {**IMAGE_METRIC_OPTIONS, **(options or {})}
  found = {name: IMAGE_METRICS[name](features, reference, options) for name in names}
  return {k: v for k, v in found.items() if v is not None}
