"""Benchmarks: the engine behind the Benchmark tab (`python -m playground.bench`) and the loop check."""
