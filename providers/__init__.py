"""One module per upstream protocol, each behind the `Provider` interface in `providers.base`."""

from providers.anthropic import AnthropicProvider
from providers.base import ANTHROPIC, GEMINI, OPENAI, Provider, StreamEvents, Usage
from providers.gemini import GeminiProvider
from providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {"openai": OpenAIProvider(), "anthropic": AnthropicProvider(), "gemini": GeminiProvider()}

__all__ = ["ANTHROPIC", "GEMINI", "OPENAI", "PROVIDERS", "Provider", "StreamEvents", "Usage"]
