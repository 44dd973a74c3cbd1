"""The lanes: a name's admission and settle on its slot (gateway.billing.lane). The one in C must give
the Python one's answers and leave the same counts, for every shape of limits, in one process's memory
and in the counters file `workers: N` share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import ClientKey
from gateway.billing import lane as lanes
from gateway.billing import startup
from gateway.billing.counters import LAYOUT, SLOT, LocalCounters
from gateway.billing.lane import LANE, PyLane

CLane = lanes.CLane
needs_c = pytest.mark.skipif(CLane is None, reason="the C lanes were not built (no compiler at install)")


def test_the_c_lanes_are_built_and_used():
    """`make install` builds them (a compiler is on every machine this runs on); without them every
    limited request costs ~10k instructions more. GATEWAY_NO_EXTENSIONS=1 asks for Python's."""
    if os.environ.get("GATEWAY_NO_EXTENSIONS"):
        assert LANE is PyLane
        pytest.skip("GATEWAY_NO_EXTENSIONS is set: the Python lanes are the ones in use")
    assert CLane is not None, "gateway/billing/_lane.c was not built: run `make install` with a C compiler at hand"
    assert LANE is CLane


START = 1_767_225_600.25  # 2026-01-01T00:00:00.25Z

limits = st.tuples(
    st.sampled_from([None, 1, 3, 40]),  # rpm
    st.sampled_from([None, 50, 2000]),  # tpm
    st.sampled_from([None, 0.05, 1.0]),  # budget
)
step = st.one_of(
    st.tuples(
        st.just("admit"),
        st.sampled_from([0.0, 0.01, 0.4, 1.0, 2.5, 30.0, 60.5, 61.0, 200.0, 86400.0, -0.5]),  # time moves on
        st.integers(0, 600),  # tokens (0: a request billed otherwise)
        st.sampled_from([0.0, 0.004, 0.02]),  # reserve
    ),
    st.tuples(
        st.just("settle"),
        st.integers(0, 1000),  # which admitted request (modulo how many there are)
        st.integers(-700, 700),  # tokens used beyond its estimate
        st.sampled_from([0.0, 0.0031, 0.25]),  # cost
    ),
)


def run(store: LocalCounters, shape: tuple[int | None, int | None, float | None], steps: list[tuple]) -> list:
    """The steps on `store`'s lanes (and its general admission now and then): every answer, in order."""
    rpm, tpm, budget = shape
    now, admitted, answers = START, [], []
    lane = store.lane("k")
    for i, (kind, a, b, c) in enumerate(steps):
        if kind == "admit":
            now += a
            period = int(now // 86400)  # a new day is a new budget period
            if i % 5 == 4:  # the store's own call, which says by how much a refusal missed
                answers.append(store.admit_now("k", now, rpm, tpm, b, budget, period, c))
                continue
            got = lane.admit(now, rpm, tpm, b, budget, period, c)
            answers.append(got if isinstance(got, str) else tuple(float(n) for n in got))
            if not isinstance(got, str):
                admitted.append((int(now), c if budget is not None else 0.0, period))
        elif admitted:
            second, reserve, period = admitted.pop(a % len(admitted))
            lane.settle(second, b, reserve, c, period)  # (b may take back more than was charged)
    return [*answers, [float(n) for n in store._slots["k"]]]


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=limits, steps=st.lists(step, max_size=60))
def test_the_c_lane_answers_as_the_python_one_in_memory(shape, steps):
    assert run(LocalCounters.memory(lane=CLane), shape, steps) == run(LocalCounters.memory(lane=PyLane), shape, steps)


@needs_c
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=limits, steps=st.lists(step, max_size=60))
def test_the_c_lane_answers_as_the_python_one_in_the_file(tmp_path_factory, shape, steps):
    """A worker's lanes in the file lock it, and keep that worker's own column of reservations."""
    tmp = tmp_path_factory.mktemp("lanes")
    stores = [LocalCounters.create(tmp / f"{t.__name__}.counters", worker=3, lane=t) for t in (CLane, PyLane)]
    try:
        assert run(stores[0], shape, steps) == run(stores[1], shape, steps)
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("kind", ["C", "Python"])
def test_a_lane_checks_and_charges_every_limit_at_once(kind):
    if kind == "C" and CLane is None:
        pytest.skip("the C lanes were not built (no compiler at install)")
    store = LocalCounters.memory(lane=CLane if kind == "C" else PyLane)
    lane = store.lane("k")
    assert lane.admit(START, 2, 100, 60, 1.0, 7, 0.5) == (1, 40)  # (rpm, tpm, tokens, budget, period, reserve)
    assert lane.admit(START, 2, 100, 60, 1.0, 7, 0.5) == "tokens"  # nothing charged for it
    assert lane.admit(START, 2, 100, 40, 1.0, 7, 0.5) == (0, 0)
    assert lane.admit(START, 2, 100, 0, 1.0, 7, 0.0) == "budget"  # 1.0 reserved: the budget names it first
    assert lane.admit(START, 2, None, 0, None, 7, 0.0) == "requests"
    lane.settle(int(START), -30, 0.5, 0.2, 7)  # used 30 tokens fewer; released 0.5, spent 0.2
    assert lane.admit(START + 1, None, 100, 30, 1.0, 7, 0.3) == (0,)
    assert lane.admit(START + 1, None, None, 0, 1.0, 7, 0.2) == "budget"  # 0.2 spent + 0.8 reserved
    # A minute on, the first second's requests and tokens are gone, not the next one's 30 tokens; a new
    # budget period spends from zero, with what is in flight still reserved.
    assert lane.admit(START + 61, 2, 100, 0, 1.0, 8, 0.2) == (1, 70)
    standing = store._slots["k"]
    assert standing[LAYOUT.spent] == 0 and standing[LAYOUT.reserved] == pytest.approx(1.0)
    store.close()


@needs_c
def test_the_c_lane_refuses_what_it_cannot_hold():
    slot = memoryview(bytearray(SLOT * 8)).cast("d")
    with pytest.raises(TypeError):
        CLane([0.0] * SLOT, 0, -1, LAYOUT)  # a list is no buffer
    with pytest.raises(ValueError, match="slot of doubles"):
        CLane(memoryview(bytearray(SLOT * 8)), 0, -1, LAYOUT)  # bytes, not doubles
    with pytest.raises(ValueError, match="slot of doubles"):
        CLane(slot[:10], 0, -1, LAYOUT)  # too short for its windows
    with pytest.raises(ValueError, match="slot of doubles"):
        CLane(slot, SLOT, -1, LAYOUT)  # a column beyond it
    with pytest.raises(BufferError):
        CLane(memoryview(bytes(SLOT * 8)).cast("d"), 0, -1, LAYOUT)  # read-only
    lane = CLane(slot, 0, -1, LAYOUT)
    with pytest.raises(TypeError, match="7 arguments"):
        lane.admit(START, 1, 1)
    with pytest.raises(TypeError):
        lane.admit(START, "1", None, 0, None, 0, 0.0)
    with pytest.raises(TypeError, match="5 arguments"):
        lane.settle(1)
    with pytest.raises(ValueError, match="finite"):
        lane.admit(float("nan"), 1, None, 0, None, 0, 0.0)  # (int() of it in Python raises too)
    with pytest.raises(ValueError, match="finite"):
        lane.settle(float("inf"), 0, 0.0, 0.0, 0)
    with pytest.raises(RuntimeError):
        lane.__init__(slot, 0, -1, LAYOUT)  # made once
    lane.close()
    slot.release()  # the lane let go of it
    with pytest.raises(ValueError, match="closed"):
        lane.admit(START, 1, None, 0, None, 0, 0.0)
    with pytest.raises(ValueError, match="closed"):
        lane.settle(1, 0, 0.0, 0.0, 0)
    lane.close()  # twice is fine


def test_closing_the_counters_closes_their_lanes(tmp_path: Path):
    """The file's map can only close once no lane holds a view of it."""
    store = LocalCounters.create(tmp_path / "c.counters")
    lane = store.lane("k")
    assert lane.admit(START, 5, None, 0, None, 0, 0.0) == (4,)
    store.close()
    if CLane is not None and isinstance(lane, CLane):
        with pytest.raises(ValueError, match="closed"):
            lane.admit(START, 5, None, 0, None, 0, 0.0)


def test_a_gateway_without_the_c_lanes_says_so_at_start(monkeypatch):
    keys = [ClientKey(name="a", key_sha256="x"), ClientKey(name="b", key_sha256="y", rpm=10)]
    monkeypatch.delenv("GATEWAY_NO_EXTENSIONS", raising=False)
    for chosen, limited, said in ((PyLane, keys, True), (PyLane, keys[:1], False), (CLane or PyLane, keys, CLane is None)):
        monkeypatch.setattr(lanes, "LANE", chosen)
        with structlog.testing.capture_logs() as logs:
            startup.say_lanes(tuple(limited))
        assert ["limits_in_python" in str(e) for e in logs] == ([True] if said else [])
    monkeypatch.setenv("GATEWAY_NO_EXTENSIONS", "1")  # chosen, not missing: nothing to say
    monkeypatch.setattr(lanes, "LANE", PyLane)
    with structlog.testing.capture_logs() as logs:
        startup.say_lanes(tuple(keys))
    assert logs == []
