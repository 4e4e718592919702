"""What the model computes inside a run: attention weights (and, as they arrive, hidden states)."""
