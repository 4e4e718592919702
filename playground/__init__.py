"""GPT-2 playground: generate with PyTorch, see every token's probability.

The front door: resolve a model, build a backend, run the one decoding loop.
"""

from .config import GenerationSettings
from .errors import DeviceError, ModelLoadError, PlaygroundError, SettingsError
from .generation import Generation, generate
from .models import ModelSource, resolve_model
from .records import GenerationResult, TokenRecord

__all__ = [
    "DeviceError", "Generation", "GenerationResult", "GenerationSettings", "ModelLoadError", "ModelSource",
    "PlaygroundError", "SettingsError", "TokenRecord", "generate", "resolve_model",
]
