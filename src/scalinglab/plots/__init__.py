"""Figures, each drawn from tables and fit JSON only."""
