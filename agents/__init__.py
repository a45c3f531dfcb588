"""Agents behind one interface: ``agents/base.py`` (Agent, RewardModel, SkillModel and the loop
that calls them), ``agents/actor_critic.py`` (the DDPG/SAC machinery), one file per agent, and
``agents/parts/`` (building blocks only agents use).

May import: torch, tensordict, agents.parts, urlb.data (dataset samplers). Never envs, urlb.run
or urlb.loop (import-linter checks it).
"""
