"""Scoring image samples for comparisons: FID / KID / IS and the offline digits measure by name.

    fid, kid, is        the FID Inception-v3 (``inception``; weights file from
                        ``metric_options.inception_weights``) against the reference statistics
                        of the data's train split (``reference_stats``: computed once per
                        dataset and size, cached as .npz)
    digits_fd           Fréchet distance of the digits classifier's 64-d features to the train
                        split's (``digits_classifier``: trained once, cached); images of
                        another size are resized to its 16 px bilinearly from their uint8
                        pixels, as the digits data itself is
    digits_confidence   the classifier's mean max-softmax on the samples

A ``Scorer`` holds what the named metrics need for one dataset (networks, reference statistics)
and is built once: ``features(images)`` runs the networks on one round of uint8 samples (the
runner stores the result with the round, so a resumed run does not recompute them) and
``compute(features)`` turns all rounds' features into {name: {'value', 'std_err'}}.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from score_sde.errors import ConfigError
from score_sde.evaluation import digits_classifier, metrics

# images (N, H, W, C) uint8 -> {'pool_3': (N, 2048), 'logits_unbiased': (N, 1008)} numpy.
FeatureFn = Callable[[np.ndarray], dict[str, np.ndarray]]


DEFAULT_OPTIONS = {
    'inception_weights': '',     # the converted FID Inception .npz (README, Evaluation)
    'digits_classifier': '',     # its cache file; '' = the user cache
    **metrics.IMAGE_METRIC_OPTIONS,
}


def check(names, dataset: str, where: str) -> None:
  """``ConfigError`` for a name that is no image metric or does not apply to ``dataset``."""
  for name in names:
    if name not in METRICS:
      raise ConfigError(f'{where}: {name!r} is not an image metric; valid: {sorted(METRICS)}.')
    allowed = METRICS[name].datasets
    if allowed is not None and dataset not in allowed:
      raise ConfigError(f'{where}: metric {name!r} applies to {list(allowed)} only, not '
                        f'data.dataset {dataset!r}; use fid / kid / is.')


class Scorer:
  """The networks and reference statistics the metrics ``names`` need, for one dataset:
  ``feature_fn`` and ``reference`` (Inception), ``classifier`` and ``digits_reference`` (the
  train split's (mu, sigma) in its features)."""

  def __init__(self, names, config, options: dict, feature_fn: FeatureFn | None = None):
    self.names = list(names)
    self.options = {**DEFAULT_OPTIONS, **options}
    networks = {METRICS[n].network for n in self.names}
    self.feature_fn = self.reference = self.classifier = self.digits_reference = None
    if 'inception' in networks:
      from score_sde.evaluation import inception, reference_stats
      if feature_fn is None:   # fails here, before any work, if the weights file is missing
        feature_fn = inception.get_feature_fn(
            inception.load_variables(self.options['inception_weights'] or None))
      self.feature_fn = feature_fn
      self.reference = reference_stats.get_reference_stats(config, feature_fn=feature_fn)
    if 'digits' in networks:
      self.classifier = digits_classifier.load_or_train(
          self.options['digits_classifier'] or None)
      self.digits_reference = metrics.feature_statistics(self.classifier.features(
          digits_classifier.split_images('train')[0]))

  def features(self, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the metrics read of one round of samples, images (N, H, W, C) uint8."""
    out = {}
    if self.feature_fn is not None:
      found = self.feature_fn(images)
      out['pool_3'], out['logits_unbiased'] = found['pool_3'], found['logits_unbiased']
    if self.classifier is not None:
      x = digits_classifier.to_classifier_input(images)
      out['digits_features'] = self.classifier.features(x)
      out['digits_probabilities'] = self.classifier.probabilities(x)
    return out

  def compute(self, features: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """{name: {'value', 'std_err'}} from the features of all samples (``features`` stacked)."""
    return {name: METRICS[name].compute(self, features) for name in self.names}


def _inception(name: str):
  def compute(scorer: Scorer, f) -> dict | None:
    return metrics.image_metrics(f, scorer.reference, scorer.options, names=(name,)).get(name)
  return compute


def _digits_fd(scorer: Scorer, f) -> dict | None:
  mu, sigma = metrics.feature_statistics(f['digits_features'])
  return {'value': metrics.frechet_distance(mu, sigma, *scorer.digits_reference),
          'std_err': None}


def _digits_confidence(scorer: Scorer, f) -> dict | None:
  confidence = f['digits_probabilities'].max(axis=1)
  return {'value': float(confidence.mean()),
          'std_err': float(confidence.std(ddof=1) / np.sqrt(len(confidence)))}


@dataclasses.dataclass(frozen=True)
class ImageMetric:
  network: str             # 'inception' | 'digits': the features it reads
  datasets: tuple | None   # the data it applies to; None: any images
  compute: Callable        # (scorer, features of all samples) -> {'value', 'std_err'} or None
  note: str                # how it is computed, for the results' table


METRICS = {
    'fid': ImageMetric('inception', None, _inception('fid'), (
        "FID: Inception pool_3 features (pytorch-fid's network and bilinear resize to 299 px) "
        "against the train split's statistics.")),
    'kid': ImageMetric('inception', None, _inception('kid'), (
        'KID: unbiased MMD² with the kernel (x·y/d + 1)³ over random subsets, ± its standard '
        'error.')),
    'is': ImageMetric('inception', None, _inception('is'), (
        'IS: softmax of the Inception logits without the bias, mean over is_splits consecutive '
        'splits (np.array_split; is_split_rule=torch_fidelity: its shuffled splits; '
        'is_splits=1: all samples at once, as the paper).')),
    'digits_fd': ImageMetric('digits', ('digits',), _digits_fd, (
        "digits_fd: Fréchet distance of the digits classifier's 64-d features to the train "
        "split's (samples resized bilinearly to its 16 px, as the data is).")),
    'digits_confidence': ImageMetric('digits', ('digits',), _digits_confidence, (
        "digits_confidence: the classifier's mean max-softmax, ± its standard error.")),
}
