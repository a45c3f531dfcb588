"""agents.parts: building blocks only agents use. Networks and optimiser steps (``nets``),
critics (``critics``), the pixel encoder (``encoders``), intrinsic-reward cores
(``intrinsic``: kNN particle entropy, forward/inverse models, contrastive losses), world-model
and transformer pieces (``world_model``, ``transformer``), OPAL's skill VAE (``skill_vae``) and
the skill priors every skill agent draws from (``skills``).

May import: torch and each other. Never an agent module (import-linter checks it).
"""
