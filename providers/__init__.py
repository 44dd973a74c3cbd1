"""One module per upstream protocol, each behind the `Provider` interface in `providers.base`."""

from providers.base import Provider, Usage
from providers.openai import OpenAIProvider

PROVIDERS: dict[str, Provider] = {"openai": OpenAIProvider()}

__all__ = ["PROVIDERS", "Provider", "Usage"]
