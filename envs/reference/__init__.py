"""dm_control's own tasks, the test oracle of the batched envs; imported lazily, only by tests and
benchmarks.

* ``envs.reference.dmc_tasks``: URLB's tasks as real dm_control environments (``make_dmc_env``)
  and the state/action helpers that put one in the same state as a batched env.
* ``envs.reference.oracle``: rollouts recorded from URLB's own environment stack
  (``tests/data/*.npz``, see ``tests/data/ORACLE_README.md``).

Nothing here imports ``agents`` or ``urlb``, and nothing in ``envs`` imports this package: the
library never needs dm_control's composer or the recorded files to run.
"""
