"""Training: the one training engine (engine.py), for the offline demo models (demo.py, corpus_zh.py) and playground.finetune."""
