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
  grid = (grid_array(images, padding) * 255).round().astype(np.uint8)
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(ensure_dir(path))
  return path


def grid_array(images: np.ndarray, padding: int = 2) -> np.ndarray:
  """(N, H, W, C) images in [0, 1] -> one (H', W', C) grid of ceil(sqrt(N)) columns on white."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  cols = math.ceil(math.sqrt(n))
  rows = math.ceil(n / cols)
  grid = np.ones((rows * (h + padding) + padding, cols * (w + padding) + padding, c), np.float32)
  for k in range(n):
    r, q = divmod(k, cols)
    y, x = padding + r * (h + padding), padding + q * (w + padding)
    grid[y:y + h, x:x + w] = images[k]
  return grid


def ensure_dir(path: str) -> str:
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
  fig.savefig(ensure_dir(path), dpi=110)
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
  fig.savefig(ensure_dir(path), dpi=110)
  plt.close(fig)
  return path


def metric_vs_nfe(panels: Sequence[Sequence[dict]], path: str, title: str = '') -> str:
  """A grid of metric-vs-NFE panels, one log-scaled NFE axis for all, error bars where given.

  panels[r][c] = {'title': str, 'ylabel': str, 'lines': {label: (nfe, mean, std_err)}}, each a
  list; a label keeps its colour in every panel. The y axis is logarithmic in a panel whose
  values are all positive and span more than a factor 20.
  """
  n_rows, n_cols = len(panels), max(len(r) for r in panels)
  labels = list(dict.fromkeys(k for r in panels for p in r for k in p['lines']))
  all_nfe = [x for r in panels for p in r for nfe, _, _ in p['lines'].values() for x in nfe]
  nfe_range = (min(all_nfe) / 1.3, max(all_nfe) * 1.3) if all_nfe else None
  colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(labels)}
  fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 2.6 * n_rows), squeeze=False)
  for r, row in enumerate(panels):
    for c in range(n_cols):
      ax = axes[r][c]
      if c >= len(row):
        ax.axis('off')
        continue
      panel = row[c]
      all_y = [y for nfe, mean, _ in panel['lines'].values() for y in mean]
      for label, (nfe, mean, se) in panel['lines'].items():
        order = np.argsort(nfe)
        ax.errorbar(np.asarray(nfe)[order], np.asarray(mean)[order], yerr=np.asarray(se)[order],
                    marker='o', ms=3, lw=1.2, capsize=2, color=colors[label], label=label)
      ax.set_xscale('log')
      if nfe_range:   # one NFE axis for every panel, so panels can be compared by eye
        ax.set_xlim(*nfe_range)
      ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
      ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
      if all_y and min(all_y) > 0 and max(all_y) > 20 * min(all_y):
        ax.set_yscale('log')
      ax.set_title(panel['title'], fontsize=9)
      ax.set_ylabel(panel['ylabel'], fontsize=8)
      ax.tick_params(labelsize=7)
      if r == n_rows - 1:
        ax.set_xlabel('NFE', fontsize=8)
  handles = [plt.Line2D([], [], color=colors[k], marker='o', ms=3) for k in labels]
  fig.legend(handles, labels, loc='lower center', ncol=min(len(labels), 6), fontsize=8,
             frameon=False)
  fig.suptitle(title)
  fig.tight_layout(rect=(0, 0.04 + 0.02 * (len(labels) > 6), 1, 1))
  fig.savefig(ensure_dir(path), dpi=80)
  plt.close(fig)
  return path


def scatter_panels(rows: Sequence[Sequence[tuple]], path: str,
                   row_labels: Sequence[str] | None = None) -> str:
  """Samples side by side: rows[r][c] = (title, samples (N, 2), data (M, 2) or None); the data
  is drawn faintly under the samples; each row shares the square view of its data and is named
  by ``row_labels[r]`` on the left."""
  def draw(ax, row, panel):
    title, samples, data = panel
    if data is not None:
      ax.scatter(data[:, 0], data[:, 1], s=0.5, color='0.8', zorder=0)
    ax.scatter(samples[:, 0], samples[:, 1], s=0.5, alpha=0.6, color='tab:blue')
    ax.set_title(title, fontsize=7)
    _square_axes(ax, extent(row[0][2] if row[0][2] is not None else row[0][1]))
  return _panel_grid(rows, path, row_labels, draw, (2.3, 2.4), dpi=80)


def _panel_grid(rows, path: str, row_labels, draw: Callable, size: tuple[float, float],
                dpi: int) -> str:
  """One figure of panels rows[r][c], each drawn by ``draw(ax, row, panel)`` on bare axes;
  short rows leave blank panels; row r is named by ``row_labels[r]`` on the left."""
  n_rows, n_cols = len(rows), max(1, max((len(r) for r in rows), default=1))
  fig, axes = plt.subplots(n_rows, n_cols, figsize=(size[0] * n_cols, size[1] * n_rows),
                           squeeze=False)
  for r, row in enumerate(rows):
    for c in range(n_cols):
      ax = axes[r][c]
      ax.set_xticks([])
      ax.set_yticks([])
      if c >= len(row):
        ax.axis('off')
        continue
      if c == 0 and row_labels is not None:
        ax.set_ylabel(row_labels[r], fontsize=7)
      draw(ax, row, row[c])
  fig.tight_layout()
  fig.savefig(ensure_dir(path), dpi=dpi)
  plt.close(fig)
  return path


def scatter_by_label(samples: np.ndarray, labels: np.ndarray, path: str, title: str = '') -> str:
  """2-D samples (N, 2) coloured by the class (N,) they were asked for."""
  fig, ax = plt.subplots(figsize=(4.6, 4.6))
  for y in np.unique(labels):
    pts = samples[labels == y]
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.5, label=f'y = {y}', color=f'C{y % 10}')
  _square_axes(ax, extent(samples))
  ax.legend(markerscale=6, loc='upper right')
  ax.set_title(title)
  fig.tight_layout()
  fig.savefig(ensure_dir(path), dpi=110)
  plt.close(fig)
  return path


GRID_IMAGES = 64        # images in a sample grid, unless asked for more
COMPLETION_ROWS = 16    # examples in an inpainting / colorization picture


VIEW_SIZE = 32   # sample grids enlarge smaller images (8x8 digits) to this size, bilinearly


def save_samples_picture(config, samples: np.ndarray, path: str, data: np.ndarray | None = None,
                         title: str = '', max_images: int | None = GRID_IMAGES) -> str:
  """Samples in the model's range: 2-D data as a scatter plot over ``data``; images as a grid
  in [0, 1] of the first ``max_images`` (None: all; callers say when some are left out)."""
  if config.data.image_size is None:
    return scatter_2d(samples, path, data=data, title=title)
  from score_sde import datasets   # the inverse scaler of the config's data
  images = np.asarray(datasets.get_data_inverse_scaler(config)(samples))[:max_images]
  return image_grid(_enlarged(images, VIEW_SIZE), path)   # no change from VIEW_SIZE px up


def image_panels(rows: Sequence[Sequence[tuple]], path: str,
                 row_labels: Sequence[str] | None = None) -> str:
  """Image grids side by side: rows[r][c] = (title, images (N, H, W, C) in [0, 1]), each panel
  a square grid of its N images (small ones enlarged as in ``save_samples_picture``); row r is
  named by ``row_labels[r]`` on the left."""
  def draw(ax, row, panel):
    title, images = panel
    grid = grid_array(_enlarged(np.asarray(images), VIEW_SIZE))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap='gray', vmin=0, vmax=1,
              interpolation='nearest')
    ax.set_title(title, fontsize=7)
  return _panel_grid(rows, path, row_labels, draw, (2.0, 2.1), dpi=100)


def image_rows(rows: Sequence[np.ndarray], path: str, padding: int = 2,
               column_titles: Sequence[str] | None = None) -> str:
  """Saves image rows as one PNG: rows[r] is (n_r, H, W, C) in [0, 1], drawn left to right;
  ``column_titles`` label the columns above the first row."""
  rows = [np.clip(np.asarray(r, np.float32), 0.0, 1.0) for r in rows if len(r)]
  h, w, c = rows[0].shape[1:]
  cols = max(len(r) for r in rows)
  top = 12 if column_titles else 0
  grid = np.ones((top + len(rows) * (h + padding) + padding, cols * (w + padding) + padding, c),
                 np.float32)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      y, x = top + padding + i * (h + padding), padding + j * (w + padding)
      grid[y:y + h, x:x + w] = image
  pixels = (grid * 255).round().astype(np.uint8)
  image = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
  if column_titles:
    from PIL import ImageDraw
    image = image.convert('RGB')
    draw = ImageDraw.Draw(image)
    for j, title in enumerate(column_titles):
      draw.text((padding + j * (w + padding), 0), title, fill=(0, 0, 0))
  image.save(ensure_dir(path))
  return path


def _enlarged(images: np.ndarray, min_size: int = 48) -> np.ndarray:
  """Small images (N, H, W, C) in [0, 1] enlarged by an integer factor to at least ``min_size``
  high, bilinearly (the interpolation the 16 px digits are made with): at 8x8 repeated pixels
  hide the strokes from the eye; real and generated images are shown the same way."""
  k = max(1, -(-min_size // images.shape[1]))
  if k == 1:
    return images
  from score_sde.datasets import image_ops
  n, h, w, _ = images.shape
  as_bytes = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
  return np.stack([image_ops.resize(im, h * k, w * k, 'bilinear') for im in as_bytes]) / 255.0


def class_grid(images: np.ndarray, labels: np.ndarray, path: str, per_class: int = 10) -> str:
  """One row per class (in label order), up to ``per_class`` of its images (N, H, W, C) in
  [0, 1]; small images are enlarged."""
  labels = np.asarray(labels)
  return image_rows([_enlarged(images[labels == y][:per_class]) for y in np.unique(labels)],
                    path)


def completion_rows(observed: np.ndarray, completed: np.ndarray, path: str,
                    mask: np.ndarray | None = None, max_rows: int = COMPLETION_ROWS) -> str:
  """One row per example: the input with the pixels to fill in greyed out | the completion |
  the original (inpainting, with ``mask``: 1 = observed); the grey input | the completion
  (colorization, no mask). Images (N, H, W, C) in [0, 1]; the first ``max_rows`` examples;
  small images are enlarged and the columns titled."""
  n = min(len(completed), max_rows)
  observed = np.broadcast_to(observed[:n], completed[:n].shape)
  if mask is None:
    rows, titles = [np.stack([observed[k], completed[k]]) for k in range(n)], ['input', 'output']
  else:
    shown = observed * mask[:n] + 0.5 * (1.0 - mask[:n])
    rows = [np.stack([shown[k], completed[k], observed[k]]) for k in range(n)]
    titles = ['masked', 'filled', 'original']
  return image_rows([_enlarged(r) for r in rows], path, column_titles=titles)


def variation_rows(sources: np.ndarray, variations: np.ndarray, path: str,
                   max_rows: int = COMPLETION_ROWS) -> str:
  """One row per source image: the source | its k variations (unCLIP's decoder). ``variations``
  (N k, H, W, C) holds source i's at i k .. i k + k - 1; all in [0, 1]; small images are
  enlarged and the columns titled."""
  k = len(variations) // len(sources)
  rows = [_enlarged(np.concatenate([sources[i:i + 1], variations[i * k:(i + 1) * k]]))
          for i in range(min(len(sources), max_rows))]
  return image_rows(rows, path, column_titles=['source'] + [f'var {j + 1}' for j in range(k)])
