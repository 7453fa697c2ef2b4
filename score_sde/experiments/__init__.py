"""Comparing variants side by side: a spec -> trained models -> sampler cells -> tables + plots.

    python -m score_sde.experiments --spec=configs/experiments/sde_variants_toy.py \
        --workdir=runs/sde_variants_toy [--spec.base.training.n_iters=500 ...]

or from a notebook: ``rows = experiments.run(spec, workdir)`` (spec: a ConfigDict or a path);
``experiments.report(spec, workdir)`` (``--report_only``) tabulates the cells finished so far.

A spec (an ml_collections file, see ``configs/experiments/``) is described in ``spec``.

The package: ``spec`` (loading, validation, the plan of variants and cells), ``runner`` (training
and running cells, resumable), ``report`` (aggregation, tables, plots), ``__main__`` (the command
line). A sampler's NFE per step comes from ``sampling.METHODS``; metrics from
``evaluation.toy_metrics.METRICS``.
"""
from score_sde.experiments.report import aggregate, write_plots, write_tables
from score_sde.experiments.runner import dry_run, report, run
from score_sde.experiments.spec import Cell, Variant, load_spec, plan, set_path
