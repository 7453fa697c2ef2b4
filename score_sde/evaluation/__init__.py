"""Evaluation of trained checkpoints. ``evaluate(config, workdir)`` is ``train.py --mode=eval``.

``loop``: the evaluation loop (loss, bits/dim, samples + FID/KID/IS or toy metrics; resumable);
``bpd``: likelihoods (bits/dim for images, nats per example for 2-D data); ``metrics``,
``inception``, ``reference_stats``: FID / KID / IS; ``toy_metrics``: 2-D sample metrics.
"""
from __future__ import annotations

from score_sde.evaluation.bpd import evaluate as evaluate_bpd
from score_sde.evaluation.loop import evaluate

__all__ = ['evaluate', 'evaluate_bpd']
