"""urlb.measure: measuring an agent while it trains. Evaluation episodes (``evaluate``),
skill measurements (``skills``: coverage, trajectory pictures, skill selection), the one
logger and the run folder's facts (``logging``).

May import: envs, urlb.data. No agent.
"""
