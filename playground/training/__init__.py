"""Training: the one training engine (engine.py) and what uses it: the offline demo models (demo.py, corpus_zh.py)
and fine-tuning (data.py: training text in; finetune.py: settings, checks, full or LoRA; jobs.py: one job at a time)."""
