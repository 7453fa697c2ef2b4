"""Evaluation of trained checkpoints. ``evaluate(config, workdir)`` is ``train.py --mode=eval``.

Today it computes likelihoods (``bpd``: bits/dim for images, nats per example for 2-D data).
"""
from __future__ import annotations

from score_sde.evaluation.bpd import evaluate

__all__ = ['evaluate']
