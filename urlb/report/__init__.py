"""urlb.report: reading finished runs' records into results. Metrics (``metrics``: IQM,
optimality gap, bootstrap intervals), runs and protocol checks (``runs``), the report
(``report``), its tables and figures (``tables``, ``plots``) and the published rows it is
compared with (``published``).

May import: envs.tasks (task order, expert scores), numpy, matplotlib. No agent, no loop.
"""
