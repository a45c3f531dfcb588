"""urlb.data: storage. Replay (``replay`` with its ``ring``, ``starts``, ``frames`` and
``memory`` pieces), reward-free datasets (``datasets``, ``minari_export``), snapshots and
checkpoints (``checkpoint``), and the run folder's records and completion marker (``records``).

May import: torch, numpy, the standard library. No agent, no env, no other urlb layer.
"""
