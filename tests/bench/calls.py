"""Function calls per request, by callee: where the gateway's extra work is, against the floor.

Instruction counts (tests.bench.instr) say how much more the gateway does than the floor; this says
where. Each target is served with a `sys.setprofile` hook that SIGUSR1 switches on and SIGUSR2 off
(writing its counts), around a fixed number of sequential requests. Python calls are counted by
file and function, calls of C functions by name and the Python function that made them. Like the
instruction count it is the same from run to run, and it takes seconds, not minutes.

    python -m tests.bench.calls                     # floor and gateway, 1,000 requests
    python -m tests.bench.calls --mode stream -n 200
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tests.bench.procs import free_port, use_uvloop, wait_port
from tests.bench.run import BENCH_KEY, PATH, ROOT, LoadGen, gateway_config, mock_and_load, spawn, stop


def _where(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    return path.split("site-packages/")[-1].removeprefix(str(ROOT) + "/") + ":" + frame.f_code.co_qualname


def serve_counting(out: Path, argv: list[str]) -> None:
    """Run a target in this process, counting calls while switched on."""
    counts: collections.Counter[str] = collections.Counter()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            counts[_where(frame)] += 1
        elif event == "c_call":
            counts[f"C {getattr(arg, '__qualname__', repr(arg))} <- {_where(frame)}"] += 1

    def on(*_: object) -> None:
        counts.clear()
        sys.setprofile(hook)

    def off(*_: object) -> None:
        sys.setprofile(None)
        part = out.with_suffix(".part")
        part.write_text("".join(f"{n} {name}\n" for name, n in counts.most_common()))
        part.replace(out)  # whole, or not there yet

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    target = argv[0]
    sys.argv = argv
    if target == "floor":
        from tests.bench.floor import main
    else:
        from gateway.cli import main
    main()


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no counts written to {path}")
        time.sleep(0.1)


async def measure(target: str, tmp: Path, mock_port: int, load: LoadGen, mode: str, n: int) -> collections.Counter[str]:
    port = free_port()
    out = tmp / f"{target}.calls"
    if target == "floor":
        argv = ["floor", "--port", str(port), "--upstream", f"http://127.0.0.1:{mock_port}"]
    else:
        argv = ["gateway", "serve", "--config", str(gateway_config(tmp, "g", port, mock_port, level="info", workers=1))]
    proc = await spawn("-m", "tests.bench.calls", "--serve", str(out), *argv, log=tmp / f"{target}.log")
    try:
        await asyncio.to_thread(wait_port, port)
        spec = {"port": port, "path": PATH, "headers": {"Authorization": f"Bearer {BENCH_KEY}"}}
        await load.call(op="latency", target=spec, n=200)  # warm up: imports, pools, caches
        proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(0.3)
        await load.call(op=mode, target=spec, n=n, warmup=0)
        proc.send_signal(signal.SIGUSR2)
        await asyncio.to_thread(_wait_for, out)
    finally:
        await stop(proc)
    counts: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines():
        count, name = line.split(" ", 1)
        counts[name] = int(count)
    return counts


def report(floor: collections.Counter[str], gateway: collections.Counter[str], n: int, top: int) -> None:
    def total(c: collections.Counter[str], c_calls: bool) -> float:
        return sum(v for k, v in c.items() if k.startswith("C ") == c_calls) / n

    for name, c in (("floor", floor), ("gateway", gateway)):
        print(f"{name:8s} {total(c, False):7.1f} Python calls and {total(c, True):7.1f} C calls per request")
    print("\nthe gateway's extra calls per request, most first (floor -> gateway):")
    diff = sorted(set(floor) | set(gateway), key=lambda k: floor[k] - gateway[k])
    for name in diff[:top]:
        extra = (gateway[name] - floor[name]) / n
        if extra < 0.5:
            break
        print(f"{extra:+7.2f}  ({floor[name] / n:6.2f} -> {gateway[name] / n:6.2f})  {name}")


async def main(mode: str, n: int, top: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    try:
        async with mock_and_load() as (mock_port, load):
            floor = await measure("floor", tmp, mock_port, load, mode, n)
            gateway = await measure("gateway", tmp, mock_port, load, mode, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(floor, gateway, n, top)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        os.chdir(ROOT)
        serve_counting(Path(sys.argv[2]), sys.argv[3:])
    else:
        parser = argparse.ArgumentParser(prog="python -m tests.bench.calls", description=__doc__.split("\n")[0])
        parser.add_argument("--mode", choices=("latency", "stream"), default="latency")
        parser.add_argument("-n", type=int, default=1000, help="requests (or streams) to count over")
        parser.add_argument("--top", type=int, default=60, help="how many of the extra calls to list")
        args = parser.parse_args()
        use_uvloop(main(args.mode, args.n, args.top))
