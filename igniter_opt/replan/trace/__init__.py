"""Replaying a rate trace: replan at every step and compare with re-solving and peak provisioning.

Trace (CSV): one row per (time, workload) with header ``time_s,workload,rate_rps`` and, optionally,
``model,slo_ms``. A row sets the workload's rate from ``time_s`` on, until its next row (a step
function); before its first row a workload is absent, and a rate of 0 stops it. Rows must be in
time order (``time_s`` never decreasing), at most one per (time, workload); rates must be numbers
>= 0. The workloads' models and SLOs come from a workloads CSV (``name,model,slo_ms``, any
``rate_rps`` column is ignored) or from the trace's own ``model`` and ``slo_ms`` columns (needed on
each workload's first row; later rows may leave them empty or must repeat them). The trace ends
one sampling period (the median gap between its times) after its last time.

Steps: every distinct time of the trace, or with ``every_s`` the times t0, t0 + every, ... before
the end. A step provisions for the highest rate of each workload during its interval
(``plan_for='peak'``, the default: no plan is ever below the trace) or for the rate at its start
(``'start'``: what a purely reactive job sees).

Strategies, each step from the previous step's plan of the same strategy:
- ``replan``: the migration-aware replanner (``run_replanner``) with the chosen planner and cost;
- ``resolve``: the chosen planner from scratch (``run_planner``), GPUs renamed after the previous
  plan's (``relabel_gpus``) so that what happens to coincide counts as kept: the cheapest plan
  at each step, with the most restarts;
- ``peak``: one plan, made once for every workload's peak rate over the whole trace.

Per step and strategy: cost per hour, GPUs, the diff against the previous plan (kept, resized,
moved, started, stopped; restarts = resized + moved) and predicted SLO misses: the number of
(workload, trace time) pairs in the step's interval at which the exact model says the step's plan
misses the workload's latency limit or rate (the rate split over its placements in proportion).
Totals: GPU-hours and cost integrated over the trace, restarts after the first step, misses.

Outputs (``out_dir``): ``job.json`` (the arguments; a later run with other arguments is refused),
per strategy and step ``<strategy>/step_NNNN.plan.json`` and ``step_NNNN.json`` (the step record,
written last: a step counts as done once it exists, so an interrupted job resumes after its last
completed step), ``steps.csv`` (the replan strategy), ``strategies_steps.csv`` (every strategy),
``comparison.json``, ``comparison.md`` and ``cost_gpus.png``. Every file is written atomically.
"""

from igniter_opt.replan.trace.evaluate import predicted_misses
from igniter_opt.replan.trace.job import run_trace_job
from igniter_opt.replan.trace.parse import Trace, read_trace, step_rates, step_times
from igniter_opt.replan.trace.records import (
    JOB_SCHEMA,
    PLAN_FOR,
    STEP_COLUMNS,
    STEP_SCHEMA,
    STRATEGIES,
    StepRecord,
    StrategySummary,
    TraceJob,
    TraceResult,
    file_sha256,
)
from igniter_opt.replan.trace.report import comparison, render_comparison_md, summarise, write_outputs

__all__ = [
    "JOB_SCHEMA", "PLAN_FOR", "STEP_COLUMNS", "STEP_SCHEMA", "STRATEGIES", "StepRecord", "StrategySummary", "Trace",
    "TraceJob", "TraceResult", "comparison", "file_sha256", "predicted_misses", "read_trace", "render_comparison_md",
    "run_trace_job", "step_rates", "step_times", "summarise", "write_outputs",
]
