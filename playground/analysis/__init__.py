"""Analyses of runs: what the model computes inside one (attention, Inside, attribution), two runs compared, sweeps."""
