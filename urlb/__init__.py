"""urlb: reward-free RL pretraining on batched MuJoCo (the URLB protocol).

One folder per layer, each importing only the layers below it (pyproject.toml's import-linter
contracts): ``urlb.run`` (config -> run), ``urlb.loop`` (the training loops), ``urlb.measure``
(evaluation, skill measurements, logging), ``urlb.report`` (metrics and reports),
``urlb.data`` (replay, datasets, checkpoints, records). Environments are in :mod:`envs`,
agents in :mod:`agents`.

``urlb.make_env`` is the entry to the batched environments (see :mod:`envs`); it is
imported on first use so that ``import urlb`` stays light.
"""

__all__ = ["TASKS", "make_env"]


def __getattr__(name: str):
    if name in __all__:
        import envs

        return getattr(envs, name)
    raise AttributeError(f"module 'urlb' has no attribute {name!r}")
