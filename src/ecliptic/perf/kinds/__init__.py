"""Benchmark kinds: one module each (spec model, runner, parser), found by ``registry``."""
