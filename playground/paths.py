"""Where the playground keeps models and exports on disk (overridable through environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Folder of local checkpoints: `$GPT2_PLAYGROUND_MODELS` or `models/` beside the package."""
    return Path(os.environ.get("GPT2_PLAYGROUND_MODELS", PROJECT_ROOT / "models"))


def exports_dir() -> Path:
    """Folder of ONNX exports: `$GPT2_PLAYGROUND_EXPORTS` or `exports/` beside the package."""
    return Path(os.environ.get("GPT2_PLAYGROUND_EXPORTS", PROJECT_ROOT / "exports"))


def demo_model_dir() -> Path:
    """Where the offline demo GPT-2 is built and cached."""
    return models_dir() / "demo-gpt2"


def demo_zh_model_dir() -> Path:
    """Where the offline Chinese demo GPT-2 is built and cached."""
    return models_dir() / "demo-zh-gpt2"


def tasks_dir() -> Path:
    """Folder of the user's evaluation tasks, a folder of task files (YAML + JSONL) each, listed on the Evaluate tab:
    `$GPT2_PLAYGROUND_TASKS` or `tasks/` beside the package."""
    return Path(os.environ.get("GPT2_PLAYGROUND_TASKS", PROJECT_ROOT / "tasks"))
