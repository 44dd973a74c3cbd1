"""providers/openai.py: usage read from every response and stream event shape the surface relays."""

from __future__ import annotations

import pytest

from providers import Usage
from providers.openai import OpenAIProvider

P = OpenAIProvider()


@pytest.mark.parametrize(
    ("endpoint", "payload", "expected"),
    [
        ("chat/completions",
         {"usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
                    "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1}}},
         Usage(11, 3, 14, 2, 1)),
        ("responses",
         {"usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13,
                    "input_tokens_details": {"cached_tokens": 2}, "output_tokens_details": {"reasoning_tokens": 1}}},
         Usage(9, 4, 13, 2, 1)),
        ("responses",  # stream: response.completed nests usage
         {"type": "response.completed", "response": {"usage": {"input_tokens": 9, "output_tokens": 4}}},
         Usage(9, 4, 13)),
        ("responses", {"type": "response.created", "response": {"usage": None}}, None),
        ("embeddings", {"usage": {"prompt_tokens": 8, "total_tokens": 8}}, Usage(8, 0, 8)),
        ("rerank", {"results": [], "usage": {"total_tokens": 17}}, Usage(total_tokens=17)),
        ("moderations", {"results": []}, None),
        ("realtime",  # response.done: singular "token_details"
         {"type": "response.done", "response": {"usage": {"input_tokens": 20, "output_tokens": 10, "total_tokens": 30,
                                                          "input_token_details": {"cached_tokens": 4}}}},
         Usage(20, 10, 30, 4)),
        ("images/generations", {"created": 1, "data": [{"url": "u"}, {"url": "v"}]}, Usage(images=2)),
        ("images/edits",
         {"data": [{"b64_json": "x"}], "usage": {"input_tokens": 50, "output_tokens": 272, "total_tokens": 322}},
         Usage(50, 272, 322, images=1)),
        ("images/generations",  # streamed image generation
         {"type": "image_generation.completed", "b64_json": "x", "usage": {"input_tokens": 5, "output_tokens": 6}},
         Usage(5, 6, 11, images=1)),
        ("images/generations", {"type": "image_generation.partial_image", "b64_json": "x"}, None),
        ("audio/transcriptions", {"text": "hi", "usage": {"type": "duration", "seconds": 7}}, Usage(seconds=7.0)),
        ("audio/transcriptions", {"text": "hi", "duration": 12.5, "segments": []}, Usage(seconds=12.5)),
        ("audio/translations", {"text": "hi", "duration": 3}, Usage(seconds=3.0)),
        ("audio/transcriptions",
         {"type": "transcript.text.done", "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 4, "total_tokens": 18}},
         Usage(14, 4, 18)),
        ("audio/transcriptions", {"text": "hi"}, None),
        ("chat/completions", "not a dict", None),
        # Odd counts: read what can be read, clamp what is absurd, and say the row is a guess.
        ("chat/completions", {"usage": {"prompt_tokens": True, "completion_tokens": "3"}},
         Usage(0, 3, 3, estimated=True)),
        ("chat/completions", {"usage": {"prompt_tokens": 12.0, "completion_tokens": 3}}, Usage(12, 3, 15)),
        ("chat/completions", {"usage": {"prompt_tokens": 1e23, "completion_tokens": 3}},
         Usage(10**9, 3, 10**9 + 3, estimated=True)),
        ("chat/completions", {"usage": {"prompt_tokens": -5, "completion_tokens": 7.6}}, Usage(0, 8, 8, estimated=True)),
        ("chat/completions", {"usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 10**30}},
         Usage(4, 2, 10**9, estimated=True)),
    ],
)
def test_usage(endpoint, payload, expected):
    assert P.usage(endpoint, payload) == expected


def test_add_sums_separate_responses_and_merge_keeps_the_largest():
    total = Usage()
    total.add(Usage(20, 10, 30, 1))
    total.add(Usage(40, 20, 0, 2, images=1, seconds=1.5))
    assert total == Usage(60, 30, 90, 3, 0, images=1, seconds=1.5)
    cumulative = Usage(5, 1, 6)
    cumulative.merge(Usage(5, 4, 9, images=2, seconds=3.0))
    assert cumulative == Usage(5, 4, 9, images=2, seconds=3.0)


def test_prepare_asks_completions_streams_for_usage_only():
    body = {"model": "a", "stream": True}
    assert P.prepare("completions", body, "b", True)["stream_options"] == {"include_usage": True}
    assert "stream_options" not in P.prepare("responses", body, "b", True)
    assert P.prepare("embeddings", {"model": "a", "input": "x"}, "b", False) == {"model": "b", "input": "x"}
