"""Process plumbing shared by the bench's pieces: event loop, fd limit, ports, RSS from /proc."""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Coroutine
from typing import Any


def use_uvloop(main: Coroutine[Any, Any, Any]) -> Any:
    import uvloop

    return uvloop.run(main)


def raise_nofile() -> None:
    """1,000 open streams need ~2,000 descriptors in a proxy; take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s") from None
            time.sleep(0.05)


def rss_mb(pid: int) -> float:
    """Resident set size of one process, in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its children (a gateway with workers is a parent and N workers)."""
    return rss_mb(pid) + sum(tree_rss_mb(c) for c in children(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (and its reaped children) has used."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    return ticks / float(_CLK_TCK)


_CLK_TCK = os.sysconf("SC_CLK_TCK")
