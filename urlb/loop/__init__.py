"""urlb.loop: the training loops, online (env -> replay -> updates) and offline (dataset ->
updates), on one base (``base``: evaluation and records, checkpoint and resume, RNG state).

May import: urlb.measure, urlb.data, envs.tasks. Never an agent: agents are used through the
interface of ``agents/base.py`` without importing it (import-linter checks it).
"""
