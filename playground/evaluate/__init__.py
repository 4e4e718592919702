"""Evaluation of models on a text: sliding-window perplexity, bits per byte and the KL divergence of a quantized variant
to fp32, through every backend's `prefill` (`python -m playground.evaluate`, the Evaluate tab, `/evaluate`).

windows.py (which tokens each window feeds and scores), scoring.py (a stream scored through a backend), texts.py (the
text: pasted, a file, a built-in held-out set), run.py (checks, one evaluation, a table of them saved to the history),
figures.py (the plot), harness.py and lm.py (lm-evaluation-harness tasks on the same backends), __main__.py (the command
line).
"""

from .run import Evaluation, Plan, Target, evaluate, evaluate_all, plan_all, plan_evaluation, targets_of
from .texts import EvaluationText, builtin_text, from_file, from_pasted, from_upload, read_data

__all__ = ["Evaluation", "EvaluationText", "Plan", "Target", "builtin_text", "evaluate", "evaluate_all", "from_file", "from_pasted",
           "from_upload", "plan_all", "plan_evaluation", "read_data", "targets_of"]
