"""The SSE filters: whatever the chunking, the client gets the same bytes and the row the same usage and text."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.relay.pump import Chain
from gateway.relay.sse import HideUsage, UsageTap
from providers import PROVIDERS


def _stream(n: int, sep: bytes, with_usage: bool) -> tuple[list[bytes], bytes]:
    """Events as a vendor sends them, and what a client that did not ask for usage must receive."""
    events = []
    for i in range(n):
        chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": f'tok{i} "q"\\'}}],
                 "usage": None}
        events.append(b"data: " + orjson.dumps(chunk) + sep)
    expected = b"".join(events)
    if with_usage:
        events.append(b"data: " + orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n}}) + sep)
    events.append(b"data: [DONE]" + sep)
    return events, expected + b"data: [DONE]" + sep


def _chain(strip: bool) -> Chain:
    openai = PROVIDERS["openai"]
    if strip:
        return Chain(UsageTap(openai, "chat/completions", whole_events=True), HideUsage(openai))
    return Chain(UsageTap(openai, "chat/completions"))


def _feed(chain: Chain, data: bytes, cuts: list[int]) -> bytes:
    out = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out.append(chain.feed(data[prev:cut]))
        sent = b"".join(out)  # a keepalive may follow exactly when the client has whole events only
        assert chain.at_boundary == (not sent or sent.endswith((b"\n\n", b"\n\r\n")))
        prev = cut
    out.append(chain.flush())
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 12),
    sep=st.sampled_from([b"\n\n", b"\r\n\r\n", b"\r\n\n"]),
    with_usage=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
)
def test_any_chunking_same_bytes_usage_and_text(n, sep, with_usage, cuts):
    events, expected = _stream(n, sep, with_usage)
    data = b"".join(events)
    cuts = [c for c in cuts if c < len(data)]

    stripped = _chain(strip=True)
    assert _feed(stripped, data, cuts) == expected  # the usage-only event the client did not ask for is held back
    passthrough = _chain(strip=False)
    assert _feed(passthrough, data, cuts) == data

    for tap in (stripped.tap, passthrough.tap):
        assert tap.text_bytes == sum(len(f'tok{i} \\"q\\"\\\\') for i in range(n))
        assert tap.events == len(events)
        if with_usage:
            assert tap.usage is not None and (tap.usage.prompt_tokens, tap.usage.completion_tokens) == (7, n)
        else:
            assert tap.usage is None


def test_usage_on_a_chunk_with_choices_is_stripped_not_dropped():
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    data = b"data: " + orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}}]}) + b"\n\n"
    data += b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"
    chain = _chain(strip=True)
    tap = chain.tap
    out = chain.feed(data) + chain.flush()
    events = out.split(b"\n\n")
    assert orjson.loads(events[1][6:]) == {"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    assert tap.usage is not None and tap.usage.total_tokens == 4
