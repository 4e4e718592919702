"""Decoding strategies that the one loop (batching.py) runs for a run's rows besides choosing a token per row: beam search
(beam.py) and contrastive search (contrastive.py)."""
