"""Instructions per request under callgrind: a CPU measure that the machine's noise does not move.

On a shared 2-core machine requests/s and CPU time per request move by 10-15% from one run to the
next, which hides most single changes. valgrind's callgrind counts the instructions a process runs
instead, the same for the same code and inputs whatever the neighbours do. Each target runs under
callgrind in front of the bench's mock vendor; after a warm-up the counters are zeroed, a fixed
number of sequential requests (or 40-chunk streams) is sent, and the count is divided by them.
User-space instructions only: system calls and cache misses are not in it, so it prices Python work,
not everything. Under valgrind a process runs ~50x slower, so keep the counts small.

    python -m tests.bench.instr                        # floor and this tree's gateway, 300 requests
    python -m tests.bench.instr --mode stream -n 100   # 40-chunk streams instead
    python -m tests.bench.instr floor /path/to/other/checkout   # A/B another tree of the gateway
    python -m tests.bench.instr . .+limited            # the same tree, with rpm, tpm and a budget on the key
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tests.bench.procs import free_port, use_uvloop, wait_port
from tests.bench.run import BENCH_KEY, LIMITS, PATH, ROOT, LoadGen, gateway_config, mock_and_load


def _total(out: Path) -> int:
    """The instruction total of the newest dump callgrind wrote for this process."""
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    for line in dumps[-1].read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


async def measure(target: str, tmp: Path, mock_port: int, load: LoadGen, mode: str, n: int) -> float:
    port = free_port()
    out = tmp / f"callgrind.{port}.out"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    env = dict(os.environ)
    if target == "floor":
        cmd = [sys.executable, "-m", "tests.bench.floor", "--port", str(port), "--upstream", f"http://127.0.0.1:{mock_port}"]
        cwd = ROOT
    else:
        tree, limited = target.removesuffix("+limited"), target.endswith("+limited")
        cfg = gateway_config(tmp, f"g{port}", port, mock_port, level="info", workers=1, key=LIMITS if limited else None)
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(cfg)]
        cwd = Path(tree)  # made absolute in __main__
        env["PYTHONPATH"] = str(cwd)
    proc = await asyncio.create_subprocess_exec(
        *valgrind, *cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.to_thread(wait_port, port, 300)
        spec = {"port": port, "path": PATH, "headers": {"Authorization": f"Bearer {BENCH_KEY}"}}
        await load.call(op="latency", target=spec, n=200)  # warm up: imports, pools, caches
        await _control("--zero", proc.pid)
        await load.call(op=mode, target=spec, n=n, warmup=0)
        await _control("--dump", proc.pid)
        await asyncio.sleep(1)
        return _total(out) / n
    finally:
        proc.terminate()
        await proc.wait()


async def _control(action: str, pid: int) -> None:
    ctl = await asyncio.create_subprocess_exec("callgrind_control", action, str(pid), stdout=asyncio.subprocess.DEVNULL)
    if await ctl.wait() != 0:
        raise RuntimeError(f"callgrind_control {action} {pid} failed")


async def main(targets: list[str], mode: str, n: int) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is needed: apt-get install valgrind")
    tmp = Path(tempfile.mkdtemp(prefix="bench-instr-"))
    try:
        async with mock_and_load() as (mock_port, load):
            counts = {}
            for target in targets:
                counts[target] = await measure(target, tmp, mock_port, load, mode, n)
                print(f"{target:40s} {counts[target] / 1000:10.1f} k instructions per {'stream' if mode == 'stream' else 'request'}", flush=True)
            if "floor" in counts:
                for target, count in counts.items():
                    if target != "floor":
                        print(f"{target} / floor: {count / counts['floor']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.bench.instr", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", default=["floor", str(ROOT)], help="'floor', or a checkout of the gateway")
    parser.add_argument("--mode", choices=("latency", "stream"), default="latency")
    parser.add_argument("-n", type=int, default=300, help="requests (or streams) to count over")
    args = parser.parse_args()
    targets = [t if t == "floor" else str(Path(t.removesuffix("+limited")).resolve()) + t[len(t.removesuffix("+limited")):]
               for t in args.targets]
    use_uvloop(main(targets, args.mode, args.n))
