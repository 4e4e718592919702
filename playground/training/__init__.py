"""Training: the one training engine (engine.py) and the recipes that use it (demo.py: the offline demo models)."""
