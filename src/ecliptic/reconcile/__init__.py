"""Reconcilers: read spec and the real world, act to converge, write status."""
