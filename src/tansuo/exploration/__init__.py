"""Exploration: slate policies with propensities, off-policy evaluation, simulation."""
