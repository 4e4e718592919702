"""Training: the one training engine, and what it builds (the offline demo models)."""
