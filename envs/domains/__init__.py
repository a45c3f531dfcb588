"""URLB's domains: models, reset distributions, observations and rewards in torch."""
