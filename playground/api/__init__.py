"""The OpenAI-compatible API (`/v1/completions`, `/v1/models`) on the playground's own server: routes and schemas."""

from .routes import OpenAIRoutes, build_openai_app

__all__ = ["OpenAIRoutes", "build_openai_app"]
