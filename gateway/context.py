"""What the gateway knows about one client request while it is served; becomes its usage row."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from config import ClientKey, Config, Price
from gateway.billing.limiter import Ticket
from gateway.billing.pricing import estimate_tokens
from gateway.relay.sse import UsageTap
from gateway.state import Services
from providers import Usage


@dataclass(slots=True)
class RequestContext:
    request_id: str
    config: Config  # the config this request started on; a reload does not change it
    services: Services  # the process's session, drain, usage writer and key health
    protocol: str  # openai | anthropic | gemini: the shape errors are rendered in
    platform: str | None  # from a /<platform>/v1 prefix
    ts: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    key: ClientKey | None = None
    endpoint: str | None = None
    model: str | None = None
    upstream_model: str | None = None
    channel: str | None = None
    channel_platform: str | None = None
    stream: bool = False
    status: int | None = None  # set when the handler knows better than the response (499)
    attempts: int = 0
    ttft_ms: float | None = None
    usage: Usage | None = None
    tap: UsageTap | None = None  # the usage tap of a streamed answer
    error: str | None = None
    request_bytes: int = 0
    images: int = 0
    input_chars: int = 0
    audio_seconds: float = 0.0
    # Endpoints billed by tokens estimate them when the vendor reports none; others (images, audio) must not.
    estimate_tokens: bool = True
    output_cap: int | None = None  # the completion tokens the request asks for at most, if it says
    ticket: Ticket | None = None  # what the key's limits admitted, to settle when the request ends
    task_id: str | None = None  # the async task this request created (its usage row is the task's)

    def tokens_estimate(self) -> int:
        """The tokens this request will use at most, as far as can be told before a vendor answers."""
        return estimate_tokens(self.request_bytes, self.output_cap) if self.estimate_tokens else 0

    def price(self) -> Price | None:
        """The requested model's price in the config this request started on."""
        info = self.config.models.get(self.model) if self.model is not None else None
        return info.price if info is not None else None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000.0

    def mark_first_byte(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()


def new_request_id(incoming: str | None) -> str:
    """The client's id if it is sane, else a fresh one."""
    if incoming and len(incoming) <= 128 and incoming.isprintable():
        return incoming
    # 128 random bits, like uuid4().hex, without a getrandom() syscall per request: an id needs to be
    # unique, not unguessable. `random` reseeds itself in each forked worker.
    return f"{random.getrandbits(128):032x}"
