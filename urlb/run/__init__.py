"""urlb.run: turning a Hydra config into a run.

What lives here: the agent spec read once from an agent's class and config (``spec``), the
typed check of a resolved config (``schema``), the frozen run plan (``plan``), the parts built
from it (``build``), CPU thread selection (``threads``), the run folder's lock and start rules
(``folder``), the fresh-or-resume driver (``execute``), and one short module per kind of
run: ``pretrain`` (online and offline), ``finetune``, ``collect`` (reward-free datasets),
``sweep`` and ``sweep_plan`` (Hydra multirun sweeps), ``resolvers`` (the configs' OmegaConf
resolvers).

May import: envs, agents (their interface; concrete classes only through a config's
``_target_``), urlb.loop, urlb.measure, urlb.data. Nothing imports urlb.run but the entry
points and scripts.
"""
