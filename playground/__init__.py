"""GPT-2 playground: generate with PyTorch, see every token's probability.

The front door: resolve a model, build a backend, run the one decoding loop.
"""

import warnings

# huggingface_hub imports tqdm.auto (through transformers, below), which warns in every Jupyter kernel without
# ipywidgets; the playground draws no progress bar in a notebook, so the warning would only sit above a cell's output.
warnings.filterwarnings("ignore", message="IProgress not found")

from .config import GenerationSettings  # noqa: E402
from .errors import DeviceError, ModelLoadError, PlaygroundError, SettingsError  # noqa: E402
from .generation import Generation, generate  # noqa: E402
from .models import ModelSource, resolve_model  # noqa: E402
from .records import GenerationResult, TokenRecord  # noqa: E402

__all__ = [
    "DeviceError", "Generation", "GenerationResult", "GenerationSettings", "ModelLoadError", "ModelSource",
    "PlaygroundError", "SettingsError", "TokenRecord", "generate", "resolve_model",
]
