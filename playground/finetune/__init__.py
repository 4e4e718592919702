"""Fine-tuning: training text in (data.py), settings, checks and the run (run.py), one job at a time (jobs.py), the CLI."""
