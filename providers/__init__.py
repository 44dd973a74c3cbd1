"""One module per upstream protocol, each behind the `Provider` interface in `providers.base`."""

from providers.base import ANTHROPIC, GEMINI, OPENAI, Provider, StreamEvents, Usage
from providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {"openai": OpenAIProvider()}

__all__ = ["ANTHROPIC", "GEMINI", "OPENAI", "PROVIDERS", "Provider", "StreamEvents", "Usage"]
