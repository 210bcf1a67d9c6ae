"""The report's sections, one module per kind: ``task`` (a trained task's tables, figures and
claims), ``diagnostics`` (gradient noise per task and the convex check), ``tuning`` (the
step-size search). Each builds what its block of the templates shows, with its claims;
``render`` assembles them into the page."""
from clipbench.report.sections import diagnostics, task, tuning

__all__ = ["diagnostics", "task", "tuning"]
