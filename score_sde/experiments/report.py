"""Experiment results: rows aggregated over seeds, tables (Markdown + CSV) and plots."""
from __future__ import annotations

import math
import os

import numpy as np

from score_sde import plotting, reporting
from score_sde.evaluation import toy_metrics
from score_sde.experiments.spec import Cell, leaves

def _mean_se(values: list[float], own_se: list[float | None]) -> tuple[float, float | None]:
  """Mean over seeds with its standard error; for one seed, the metric's own standard error."""
  values = np.asarray(values, np.float64)
  if len(values) > 1:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
  return float(values[0]), own_se[0]


def aggregate(spec, cells: list[Cell], results: dict) -> list[dict]:
  """One row per (variant without its seed, sampler, NFE budget), in the plan's order."""
  groups: dict[tuple, list[dict]] = {}
  axis_values: dict[tuple, dict] = {}
  for cell in cells:
    values = tuple((p, v) for p, v in cell.variant.values if p != 'seed')
    key = (values, cell.sampler, cell.nfe_budget)
    groups.setdefault(key, []).append(results[cell])
    axis_values[key] = dict(values)
  rows = []
  for key, rs in groups.items():
    row = {**{p.split('.')[-1]: v for p, v in axis_values[key].items()}, 'sampler': key[1],
           'nfe_budget': key[2], 'nfe': float(np.mean([r['nfe'] for r in rs])), 'seeds': len(rs)}
    for name in spec.metrics:
      own = [r['metrics'][name] for r in rs]
      if any(m is None for m in own):
        row[name], row[name + '_se'] = None, None
      else:
        row[name], row[name + '_se'] = _mean_se([m['value'] for m in own],
                                                [m['std_err'] for m in own])
    row['sample_seconds'] = float(np.mean([r['sample_seconds'] for r in rs]))
    row['train_seconds'] = float(np.mean([r['train_seconds'] for r in rs]))
    rows.append(row)
  return rows


def write_tables(rows: list[dict], spec, workdir: str) -> list[str]:
  """``results.csv`` (every number) and ``results.md`` (mean ± s.e. per metric)."""
  fields = list(rows[0].keys())
  axes = [k for k in fields if k not in ('sampler', 'nfe_budget', 'nfe', 'seeds', 'sample_seconds',
                                         'train_seconds') and not k.endswith('_se')
          and k not in spec.metrics]
  header = axes + ['sampler', 'NFE'] + list(spec.metrics) + ['sample s', 'train s']
  cells = [[str(r[a]) for a in axes] + [r['sampler'], f'{r["nfe"]:.0f}']
           + [reporting.format_value(r[m], r[m + '_se']) for m in spec.metrics]
           + [f'{r["sample_seconds"]:.2f}', f'{r["train_seconds"]:.0f}'] for r in rows]
  seeds = rows[0]['seeds']
  note = (f'Mean ± standard error over {seeds} {spec.seed_scope} seeds' if seeds > 1 else
          "One seed; ± is the metric's own standard error")
  note += (f'; {spec.num_samples} samples per cell. Metrics: {", ".join(spec.metrics)} '
           f'(options {spec.metric_options.to_dict()}); sample s: sampling wall time without '
           'compilation; train s: training wall time of the model.')
  md_path = reporting.write_text(os.path.join(workdir, 'results.md'),
                                 reporting.markdown_table(header, cells) + '\n' + note + '\n')
  return [md_path, reporting.write_csv(os.path.join(workdir, 'results.csv'), rows)]


def write_plots(rows: list[dict], spec, cells: list[Cell], workdir: str) -> list[str]:
  """Metric vs NFE (columns: values of ``spec.plot_columns``; rows: other variant axes x metric;
  one line per sampler) and the first seed's samples side by side (rows: variants; columns:
  samplers at their largest NFE)."""
  col_key = spec.plot_columns.split('.')[-1]
  axes = [p.split('.')[-1] for p, _ in leaves(spec.train_axes)]
  row_keys = [k for k in axes if k != col_key]
  cols = list(dict.fromkeys(r.get(col_key) for r in rows))
  groups = list(dict.fromkeys(tuple(r[k] for k in row_keys) for r in rows))
  panels = []
  for group in groups:
    for metric in spec.metrics:
      mine = [r for r in rows if tuple(r[k] for k in row_keys) == group and r[metric] is not None]
      if not mine:
        continue
      line_row = []
      for col in cols:
        lines = {}
        for r in (r for r in mine if r.get(col_key) == col):
          # One line per sampler: settings axes (e.g. the ODE's rtol) are points along it.
          xs = lines.setdefault(r['sampler'].split('[')[0], ([], [], []))
          xs[0].append(r['nfe'])
          xs[1].append(r[metric])
          xs[2].append(r[metric + '_se'] or 0.0)
        title = ', '.join(str(g) for g in group + ((col,) if col is not None else ()))
        line_row.append({'title': title, 'ylabel': metric, 'lines': lines})
      panels.append(line_row)
  plot_dir = os.path.join(workdir, 'plots')
  paths = [plotting.metric_vs_nfe(panels, os.path.join(plot_dir, 'metric_vs_nfe.png'))]
  picture_rows, row_labels = [], []
  seed = spec.seeds[0]
  for variant in dict.fromkeys(c.variant for c in cells if c.seed == seed):
    best: dict[str, Cell] = {}
    for c in cells:
      if c.variant == variant and c.seed == seed:
        if c.sampler not in best or (c.nfe_budget or 0) >= (best[c.sampler].nfe_budget or 0):
          best[c.sampler] = c
    row = []
    for c in best.values():
      path = os.path.join(workdir, 'cells', c.name + '.npy')
      if os.path.exists(path):
        row.append((f'{c.sampler}, NFE {c.nfe_budget or "adaptive"}', np.load(path),
                    toy_metrics.reference_data(c.config.data.dataset, 2000, seed)))
    picture_rows.append(row)
    row_labels.append(', '.join(str(v) for p, v in variant.values if p != 'seed'))
  paths.append(plotting.scatter_panels(picture_rows, os.path.join(plot_dir, 'samples.png'),
                                       row_labels))
  return paths
