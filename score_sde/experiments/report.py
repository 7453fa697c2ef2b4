"""Experiment results: rows aggregated over seeds, tables (Markdown + CSV), plots, and the plan's
cost for ``--dry_run``."""
from __future__ import annotations

import math
import os

import numpy as np

from score_sde import datasets, plotting, reporting, sampling
from score_sde.evaluation import scoring, toy_metrics
from score_sde.experiments.spec import MODEL_METRICS, Cell, Variant, leaves

def _mean_se(values: list[float], own_se: list[float | None]) -> tuple[float, float | None]:
  """Mean over seeds with its standard error; for one seed, the metric's own standard error."""
  values = np.asarray(values, np.float64)
  if len(values) > 1:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))
  return float(values[0]), own_se[0]


def sample_metrics(spec) -> list[str]:
  return [m for m in spec.metrics if m not in MODEL_METRICS]


def aggregate(spec, cells: list[Cell], results: dict, model_results: dict | None = None
              ) -> list[dict]:
  """One row per (variant without its seed, sampler, NFE budget), in the plan's order; model
  metrics (bpd) are the model's (mean over training seeds), the same in each of its rows."""
  groups: dict[tuple, list[dict]] = {}
  axis_values: dict[tuple, dict] = {}
  models: dict[tuple, dict] = {}
  for cell in cells:
    values = tuple((p, v) for p, v in cell.variant.values if p != 'seed')
    key = (values, cell.sampler, cell.nfe_budget)
    groups.setdefault(key, []).append(results[cell])
    axis_values[key] = dict(values)
    found = (model_results or {}).get(cell.variant)
    if found is not None:
      models.setdefault(key, {})[cell.variant] = found
  rows = []
  for key, rs in groups.items():
    row = {**{p.split('.')[-1]: v for p, v in axis_values[key].items()}, 'sampler': key[1],
           'nfe_budget': key[2]}
    if rs[0].get('skipped'):   # the sampler does not fit the model: a row saying why
      rows.append({**row, 'nfe': None, 'seeds': 0,
                   **{k: None for m in spec.metrics for k in (m, m + '_se')},
                   'sample_seconds': None, 'train_seconds': None, 'skipped': rs[0]['skipped']})
      continue
    row.update(nfe=float(np.mean([r['nfe'] for r in rs])), seeds=len(rs))
    for name in spec.metrics:
      if name in MODEL_METRICS:
        own = [m[name] for m in models.get(key, {}).values()]
        row[name], row[name + '_se'] = (_mean_se([m['value'] for m in own],
                                                 [m['std_err'] for m in own]) if own
                                        else (None, None))
        continue
      own = [r['metrics'][name] for r in rs]
      if any(m is None for m in own):
        row[name], row[name + '_se'] = None, None
      else:
        row[name], row[name + '_se'] = _mean_se([m['value'] for m in own],
                                                [m['std_err'] for m in own])
    row['sample_seconds'] = float(np.mean([r['sample_seconds'] for r in rs]))
    trained = [r['train_seconds'] for r in rs if r['train_seconds'] is not None]
    row['train_seconds'] = float(np.mean(trained)) if trained else None   # None: a named run
    row['skipped'] = None
    rows.append(row)
  return rows


def write_tables(rows: list[dict], spec, workdir: str) -> list[str]:
  """``results.csv`` (every number) and ``results.md`` (mean ± s.e. per metric; model metrics
  in a table of their own, one row per model)."""
  fields = list(rows[0].keys())
  per_cell = sample_metrics(spec)
  axes = [k for k in fields if k not in ('sampler', 'nfe_budget', 'nfe', 'seeds', 'sample_seconds',
                                         'train_seconds', 'skipped') and not k.endswith('_se')
          and k not in spec.metrics]
  skips = any(r['skipped'] for r in rows)
  header = axes + ['sampler', 'NFE'] + per_cell + ['sample s', 'train s'] + ['note'] * skips
  cells = [[str(r[a]) for a in axes] + [r['sampler']] + (
      [f'{r["nfe"]:.0f}'] + [reporting.format_value(r[m], r[m + '_se']) for m in per_cell]
      + [f'{r["sample_seconds"]:.2f}', _seconds(r['train_seconds'])] + [''] * skips
      if not r['skipped'] else
      ['—'] * (len(per_cell) + 3) + [f'skipped: {r["skipped"]}']) for r in rows]
  seeds = max(r['seeds'] for r in rows)
  note = (f'Mean ± standard error over {seeds} {spec.seed_scope} seeds' if seeds > 1 else
          "One seed; ± is the metric's own standard error")
  note += (f'; {spec.num_samples} samples per cell. Metrics: {", ".join(per_cell)} '
           f'(options {spec.metric_options.to_dict()}); sample s: sampling wall time without '
           'compilation; train s: training wall time of the model.')
  note += ''.join(' ' + scoring.METRICS[m].note for m in per_cell
                  if m in scoring.METRICS)
  text = reporting.markdown_table(header, cells) + '\n' + note + '\n'
  model_metrics = [m for m in spec.metrics if m in MODEL_METRICS]
  if model_metrics:
    per_model = {tuple(r[a] for a in axes): r for r in rows if not r['skipped']}
    text += '\n' + reporting.markdown_table(
        axes + model_metrics,
        [[str(v) for v in key] + [reporting.format_value(r[m], r[m + '_se']) for m in model_metrics]
         for key, r in per_model.items()])
    text += ('\nbpd: bits/dim of the test split under the probability-flow ODE (the '
             "variant's eval.likelihood_* tolerances, Hutchinson trace estimator), uniform "
             'dequantisation (x + u) / 256 with u ~ U[0, 1)^D, once per model; ± over the test '
             'examples (one training seed) or over training seeds.\n')
  md_path = reporting.write_text(os.path.join(workdir, 'results.md'), text)
  return [md_path, reporting.write_csv(os.path.join(workdir, 'results.csv'), rows)]


def _seconds(value) -> str:
  return '—' if value is None else f'{value:.0f}'


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
    for metric in sample_metrics(spec):
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
  image = False
  for variant in dict.fromkeys(c.variant for c in cells if c.seed == seed):
    best: dict[str, Cell] = {}
    for c in cells:
      if c.variant == variant and c.seed == seed:
        if c.sampler not in best or (c.nfe_budget or 0) >= (best[c.sampler].nfe_budget or 0):
          best[c.sampler] = c
    row = []
    image = variant.is_image
    for c in best.values():
      path = os.path.join(workdir, 'cells', c.name + '.npy')
      if not os.path.exists(path):
        continue
      title = f'{c.sampler}, NFE {c.nfe_budget or "adaptive"}'
      if image:   # the first 36: the same prior noise in every row (same seed and sampler)
        row.append((title, np.load(path)[:36].astype(np.float32) / 255.0))
      else:
        row.append((title, np.load(path),
                    toy_metrics.reference_data(c.config.data.dataset, 2000, seed)))
    picture_rows.append(row)
    row_labels.append(', '.join(str(v) for p, v in variant.values if p != 'seed'))
  draw = plotting.image_panels if image else plotting.scatter_panels
  paths.append(draw(picture_rows, os.path.join(plot_dir, 'samples.png'), row_labels))
  return paths


def describe(spec, variants: list[Variant], cells: list[Cell]) -> str:
  """The plan and its cost: models (trained or evaluated), cells, samples and score
  evaluations, for ``--dry_run``."""
  lines, total_nfe, adaptive = [], 0, 0
  samples = len(cells) * spec.num_samples
  lines.append(f'{len(variants)} models, {len(cells)} cells ({len(cells) // max(len(variants), 1)}'
               f' per model), {samples:,} samples in rounds of {spec.batch_size:,}; metrics: '
               f'{", ".join(spec.metrics)}')
  for v in variants:
    tc = v.config.training
    how = (f'evaluate {v.run} (step {v.step})' if v.run else
           f'train {tc.n_iters:,} steps x batch {tc.batch_size} '
           f'({tc.n_iters * tc.batch_size / 1e6:.1f}M examples)')
    shape = 'x'.join(str(d) for d in datasets.sample_shape(v.config))
    lines.append(f'  model {v.name}: {v.config.data.dataset} {shape}, {v.config.model.name}, '
                 f'{tc.sde}: {how}')
  skipped = [c for c in cells if c.skipped]
  for reason in dict.fromkeys(c.skipped for c in skipped):
    lines.append(f'  skipped: {sum(c.skipped == reason for c in skipped)} cells: {reason}')
  cells = [c for c in cells if not c.skipped]
  samples = len(cells) * spec.num_samples
  per_sampler: dict[tuple, list[Cell]] = {}
  for c in cells:
    per_sampler.setdefault((c.sampler, c.nfe_budget), []).append(c)
  for (label, budget), group in per_sampler.items():
    method = sampling.METHODS[group[0].config.sampling.method]
    if method.nfe_per_step is None:
      adaptive += len(group)
      cost = 'adaptive (NFE measured at run time)'
    else:
      cfg = group[0].config.sampling
      nfe = cfg.num_steps * method.nfe_per_step(cfg) - method.nfe_saved
      total_nfe += nfe * spec.num_samples * len(group)
      cost = f'{cfg.num_steps} steps, {nfe} NFE'
    lines.append(f'  sampler {label}: {cost}; {len(group)} cells')
  lines.append(f'Cost: {samples:,} samples; {total_nfe:.3g} score evaluations (network calls x '
               f'examples) in the fixed-step cells, plus {adaptive} adaptive cells')
  if any(m in MODEL_METRICS for m in spec.metrics):
    lines.append(f'  bpd: {len(variants)} models x the {variants[0].config.eval.bpd_dataset} split '
                 f'x {variants[0].config.eval.num_repeats} pass(es), adaptive probability-flow ODE')
  return '\n'.join(lines)
