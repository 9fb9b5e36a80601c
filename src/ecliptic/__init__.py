"""Ecliptic: a self-service research cloud."""

__version__ = "0.1.0"
