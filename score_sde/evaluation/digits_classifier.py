"""A small digits classifier whose features score samples with nothing downloaded.

A scikit-learn MLP (256 -> 128 -> 64 -> 10, ReLU, Adam, L2 0.1, 100 epochs, seeded) is trained on the digits' train
split (``score_sde.datasets.digits``, 16x16 grey in [0, 1]) in a few seconds; its parameters are
cached as an ``.npz`` (``cache_path``). Two numbers compare a set of images with the held-out
test split:

  * the Fréchet distance between Gaussians fitted to the 64-d penultimate (second hidden layer)
    ReLU features (``evaluation.metrics.frechet_distance``; an FID with this network in place of
    Inception), and
  * the mean class confidence, E[max_k p(k | x)] under the classifier's softmax.

Images are (n, 16, 16, 1) or (n, 16, 16) in [0, 1] (the data's range before the model's scaler);
samples are clipped to [0, 1] first, as they are when shown as pictures.
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from score_sde.datasets import digits, image_ops
from score_sde import reporting
from score_sde.errors import DataError
from score_sde.evaluation import metrics

HIDDEN = (128, 64)
SEED = 0
IMAGE_SIZE = 16


def default_cache_path() -> str:
  root = os.environ.get('XDG_CACHE_HOME', os.path.join(os.path.expanduser('~'), '.cache'))
  return os.path.join(root, 'score_sde', f'digits_classifier_{IMAGE_SIZE}px.npz')


@dataclasses.dataclass(frozen=True)
class DigitsClassifier:
  """The MLP's weights (list of (d_in, d_out)) and biases; pure numpy forward passes."""
  weights: tuple[np.ndarray, ...]
  biases: tuple[np.ndarray, ...]

  def _hidden(self, images) -> np.ndarray:
    x = _flatten(images)
    for w, b in zip(self.weights[:-1], self.biases[:-1]):
      x = np.maximum(x @ w + b, 0.0)
    return x

  def features(self, images) -> np.ndarray:
    """Penultimate-layer features, (n, 64) float64."""
    return self._hidden(images)

  def probabilities(self, images) -> np.ndarray:
    """Softmax class probabilities, (n, 10)."""
    logits = self._hidden(images) @ self.weights[-1] + self.biases[-1]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)

  def accuracy(self, images, labels) -> float:
    return float(np.mean(self.probabilities(images).argmax(1) == np.asarray(labels)))


def at_classifier_size(images) -> np.ndarray:
  """Float images (n, s, s, 1) in [0, 1] of any size s -> (n, 16, 16, 1): other sizes than 16
  (the 8 px digits' samples) quantised to 8 bits and resized by ``to_classifier_input``, as the
  16 px data is made; anything else is returned as it is."""
  x = np.asarray(images, np.float64)
  if x.ndim == 4 and x.shape[1] == x.shape[2] != IMAGE_SIZE and x.shape[-1] == 1:
    return to_classifier_input(np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8))
  return x


def _flatten(images) -> np.ndarray:
  """(n, s, s[, 1]) images in [0, 1] -> (n, 256), through ``at_classifier_size``."""
  x = np.asarray(images, np.float64)
  if x.ndim == 3:
    x = x[..., None]
  x = at_classifier_size(x)
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
    raise DataError(f'The digits classifier takes (n, size, size[, 1]) images '
                    f'in [0, 1], got shape {np.shape(images)}.')
  return x.reshape(len(x), -1)


def split_images(split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images (n, 16, 16, 1) float in [0, 1], labels (n,)) of a digits split."""
  images, labels = digits.load_split(split, IMAGE_SIZE)
  return images.astype(np.float64) / 255.0, labels


def train(seed: int = SEED, max_iter: int = 100) -> DigitsClassifier:
  """Fits the MLP on the train split (seconds; deterministic for a seed). The strong L2 penalty
  (alpha 0.1) keeps its confidence on images unlike digits lower (uniform noise: ~0.66 mean
  max-softmax, against ~0.9 with alpha 1e-3) at the same test accuracy (~97%)."""
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.neural_network import MLPClassifier
  x, y = split_images('train')
  mlp = MLPClassifier(hidden_layer_sizes=HIDDEN, alpha=0.1, max_iter=max_iter, random_state=seed)
  with warnings.catch_warnings():   # 100 epochs reach ~97% test accuracy; more gain nothing
    warnings.simplefilter('ignore', ConvergenceWarning)
    mlp.fit(_flatten(x), y)
  return DigitsClassifier(tuple(mlp.coefs_), tuple(mlp.intercepts_))


def load_or_train(cache_path: str | None = None) -> DigitsClassifier:
  """The cached classifier at ``cache_path`` (default: the user cache), trained and saved first
  if it is not there (written atomically: a temporary file, then a rename)."""
  path = cache_path or default_cache_path()
  if os.path.exists(path):
    with np.load(path) as f:
      n = len(HIDDEN) + 1
      return DigitsClassifier(tuple(f[f'w{k}'] for k in range(n)),
                              tuple(f[f'b{k}'] for k in range(n)))
  clf = train()
  save(clf, path)
  return clf


def save(clf: DigitsClassifier, path: str) -> str:
  """Writes ``clf`` where ``load_or_train(path)`` reads it (atomically)."""
  return reporting.write_npz(path, **{f'w{k}': w for k, w in enumerate(clf.weights)},
                             **{f'b{k}': b for k, b in enumerate(clf.biases)})


def to_classifier_input(images) -> np.ndarray:
  """uint8 images (n, s, s, 1) of any size s -> (n, 16, 16, 1) float in [0, 1]: resized from
  their pixels by PIL's bilinear filter, as ``datasets.digits`` makes the 16 px data from the
  8 px originals (so an 8 px model's samples are scored like the 16 px data)."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 1:
    raise DataError(f'to_classifier_input takes uint8 (n, size, size, 1) images, got '
                    f'{images.dtype} {images.shape}')
  if images.shape[1:3] != (IMAGE_SIZE, IMAGE_SIZE):
    images = np.stack([image_ops.resize(im, IMAGE_SIZE, IMAGE_SIZE, 'bilinear') for im in images])
  return images.astype(np.float64) / 255.0


def quality(clf: DigitsClassifier, images, reference) -> dict[str, float]:
  """{'frechet': Fréchet distance of ``images`` to ``reference`` in the classifier's features,
  'confidence': mean max-softmax of ``images``}; both (n, s, s[, 1]) in [0, 1] (s = 16, or any size
  resized as the data is: ``_flatten``)."""
  images = np.clip(np.asarray(images, np.float64), 0.0, 1.0)
  mu1, sigma1 = metrics.feature_statistics(clf.features(images))
  mu2, sigma2 = metrics.feature_statistics(clf.features(reference))
  return {'frechet': metrics.frechet_distance(mu1, sigma1, mu2, sigma2),
          'confidence': float(clf.probabilities(images).max(axis=1).mean())}
