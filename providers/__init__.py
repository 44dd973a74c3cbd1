"""One module per upstream protocol, each behind the `Provider` interface in `providers.base`."""

from providers.anthropic import AnthropicProvider
from providers.base import ANTHROPIC, GEMINI, OPENAI, Provider, StreamEvents, Usage
from providers.gemini import GeminiProvider
from providers.openai import OpenAIProvider
from providers.tasks import TASK_VENDORS

PROVIDERS: dict[str, Provider] = {"openai": OpenAIProvider(), "anthropic": AnthropicProvider(), "gemini": GeminiProvider()}
# Every name a channel's `provider` may take: the chat protocols above, and the async generation vendors
# (providers.tasks); `openai` is both.
CHANNEL_PROVIDERS = frozenset(PROVIDERS) | frozenset(TASK_VENDORS)

__all__ = ["ANTHROPIC", "CHANNEL_PROVIDERS", "GEMINI", "OPENAI", "PROVIDERS", "Provider", "StreamEvents", "Usage"]
