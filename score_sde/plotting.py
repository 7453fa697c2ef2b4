"""Pictures: image grids, 2-D sample scatter plots, learned score fields with trajectories."""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def image_grid(images: np.ndarray, path: str, padding: int = 2) -> str:
  """Saves (N, H, W, C) images in [0, 1] as one PNG grid of ceil(sqrt(N)) columns."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.ones((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.float32)
  for k in range(n):
    r, q = divmod(k, cols)
    y, x = padding + r * (h + padding), padding + q * (w + padding)
    grid[y:y + h, x:x + w] = images[k]
  grid = (grid * 255).round().astype(np.uint8)
  Image.fromarray(grid[..., 0] if c == 1 else grid).save(_ensure_dir(path))
  return path


def _ensure_dir(path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return path


def _square_axes(ax, lim):
  ax.set_xlim(-lim, lim)
  ax.set_ylim(-lim, lim)
  ax.set_aspect('equal')


def extent(points: np.ndarray) -> float:
  """Half-width of a square view that holds ``points`` (N, 2) with a margin."""
  return 1.15 * float(np.percentile(np.abs(points), 99.5)) + 1e-3


def scatter_2d(samples: np.ndarray, path: str, data: np.ndarray | None = None,
               title: str = '', lim: float | None = None) -> str:
  """Samples (N, 2) beside optional data points (M, 2), on the same square axes."""
  lim = lim or extent(data if data is not None else samples)
  panels = [('data', data), ('samples', samples)] if data is not None else [('samples', samples)]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
  for ax, (name, pts) in zip(axes[0], panels):
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5,
               color='tab:gray' if name == 'data' else 'tab:blue')
    ax.set_title(f'{name} ({len(pts)})')
    _square_axes(ax, lim)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(_ensure_dir(path), dpi=110)
  plt.close(fig)
  return path


def score_field(score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], times: Sequence[float],
                path: str, trajectories: np.ndarray | None = None,
                trajectory_times: np.ndarray | None = None, lim: float = 1.5,
                grid_size: int = 21, title: str = '', data: np.ndarray | None = None) -> str:
  """The learned score s(x, t) as arrows on a grid at a few ``times``.

  ``trajectories`` (S, K, 2) are sampling paths at ``trajectory_times`` (S,) from t=T down to
  t~0; each panel draws the part of every path up to that panel's time. ``data`` (M, 2), if
  given, is drawn faintly underneath.
  """
  g = np.linspace(-lim, lim, grid_size)
  xx, yy = np.meshgrid(g, g)
  pts = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
  fig, axes = plt.subplots(1, len(times), figsize=(4.0 * len(times), 4.2), squeeze=False)
  for ax, t in zip(axes[0], times):
    if data is not None:
      ax.scatter(data[:, 0], data[:, 1], s=1, color='0.8', zorder=0)
    s = np.asarray(score_fn(pts, np.full((len(pts),), t, np.float32)))
    norm = np.linalg.norm(s, axis=-1, keepdims=True)
    d = s / np.maximum(norm, 1e-8)
    ax.quiver(pts[:, 0], pts[:, 1], d[:, 0], d[:, 1], np.log1p(norm[:, 0]), cmap='viridis',
              angles='xy', scale=grid_size * 1.6, width=0.004)
    if trajectories is not None:
      upto = trajectory_times >= t
      for k in range(trajectories.shape[1]):
        path_k = trajectories[upto, k]
        ax.plot(path_k[:, 0], path_k[:, 1], color='tab:red', lw=0.8, alpha=0.8)
        ax.plot(path_k[-1:, 0], path_k[-1:, 1], 'o', color='tab:red', ms=2.5)
    ax.set_title(f't = {t:g}')
    _square_axes(ax, lim)
  fig.suptitle(title or 'learned score s(x, t) (direction; colour = log(1 + |s|)) and probability-flow paths')
  fig.tight_layout()
  fig.savefig(_ensure_dir(path), dpi=110)
  plt.close(fig)
  return path
