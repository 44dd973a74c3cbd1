"""The SSE tap: whatever the chunking, the client gets the same bytes and the row the same usage and text."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.relay.pump import Chain
from gateway.relay.sse import UsageTap
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
        return Chain(UsageTap(openai, "chat/completions", hide_usage=True))
    return Chain(UsageTap(openai, "chat/completions"))


def _feed(chain: Chain, data: bytes, cuts: list[int]) -> bytes:
    out = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out.append(chain.feed(data[prev:cut]))
        sent = b"".join(out)  # a keepalive may follow exactly when the client has whole events only
        assert chain.at_boundary == (not sent or sent.endswith((b"\n\n", b"\n\r\n", b"\r\r")))
        prev = cut
    out.append(chain.flush())
    return b"".join(out)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 12),
    sep=st.sampled_from([b"\n\n", b"\r\n\r\n", b"\r\n\n", b"\r\r"]),
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


def test_bare_cr_line_endings_end_events():
    events = [b'data: {"choices":[{"delta":{"content":"a"}}]}\r\r', b'data: {"choices":[],"usage":{"prompt_tokens":2}}\r\r',
              b"data: [DONE]\r\r"]
    chain = _chain(strip=True)
    assert chain.feed(events[0]) == events[0]  # passed on at once, not held until the stream ends
    assert chain.feed(events[1]) == b""  # the usage-only event the client did not ask for
    assert chain.feed(events[2]) + chain.flush() == events[2]
    assert chain.tap.usage is not None and chain.tap.usage.prompt_tokens == 2 and chain.tap.events == 3


def test_an_event_that_never_ends_is_let_go_past_the_cap():
    tap = UsageTap(PROVIDERS["openai"], "chat/completions", hide_usage=True, max_event=1000)
    chain = Chain(tap)
    sent = chain.feed(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n') + chain.feed(b'data: "' + b"x" * 600)
    assert not tap.stopped
    sent += chain.feed(b"y" * 600)  # past 1,000 bytes without an end: held no longer
    assert tap.stopped and len(tap._buf) == 0
    sent += chain.feed(b"z" * 5000) + chain.flush()  # and from now on passed on as it comes
    assert sent.endswith(b"x" * 600 + b"y" * 600 + b"z" * 5000)
    assert tap.usage is None and tap.text_bytes == 1  # the row is estimated from what was read


def test_tap_notes_an_error_event_of_any_protocol() -> None:
    from gateway.relay.sse import stream_error

    tap = UsageTap(PROVIDERS["openai"], "chat/completions")
    tap.feed(b'data: {"choices":[{"delta":{"content":"error"}}]}\n\n')  # the word in text is not an error
    assert tap.error is None
    tap.feed(b'data: {"error": {"message": "upstream overloaded", "type": "server_error"}}\n\n')
    assert tap.error == "upstream overloaded"
    assert stream_error({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}) == "Overloaded"
    assert stream_error({"type": "error", "code": "server_error", "message": "boom"}) == "boom"
    assert stream_error({"type": "response.failed", "response": {"error": {"message": "bad"}}}) == "bad"
    assert stream_error({"error": {"code": 503, "message": "UNAVAILABLE now", "status": "UNAVAILABLE"}}) == "UNAVAILABLE now"
    assert stream_error({"type": "message_delta"}) is None
