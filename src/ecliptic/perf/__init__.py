"""Benchmarks: specs, kinds (runner and parser each), sets, statistics, plots and exports."""
