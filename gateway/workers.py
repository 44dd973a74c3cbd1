"""`workers: N`: N forked processes serving one port (SO_REUSEPORT), watched by the parent.

The parent opens no socket and runs no event loop while the workers live. It readies the database
once (schema, migrations, spool replay) so workers never race on DDL, forks the workers, forwards
SIGHUP (reload) and SIGTERM/SIGINT (drain) to each of them, and exits 0 once every worker has
drained and flushed its usage rows. Each worker writes its own rows on its own SQLite connection;
WAL with a busy timeout serialises the commits, so no row is lost.

A worker that dies after it started serving is started again. One that dies before (a port it
cannot bind, a database it cannot open) would only crash-loop, so then the whole gateway stops.

Workers run in their own process group, so a terminal's Ctrl-C (or `kill -- -PGID`) reaches the
parent only and each worker gets exactly one SIGTERM, from the parent. Under systemd use
`KillMode=mixed` for the same reason. A worker whose parent dies gets SIGTERM (Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import structlog

from config import Config
from gateway.logs import set_worker
from gateway.ops.metrics import prepare_multiprocess, remove_multiprocess, worker_gone

log = structlog.get_logger("gateway")

_PR_SET_PDEATHSIG = 1

# worker(index, serving): runs one worker until it has drained; calls serving() once it listens.
Worker = Callable[[int, Callable[[], None]], None]


def supervise(config: Config, worker: Worker) -> int:
    """Run `worker` in `config.workers` child processes; return the parent's exit status."""
    set_worker(None)  # the parent's own lines; a worker's say which it is (gateway.logs)
    prepare_database(config)
    # One scrape of any worker covers them all: each keeps its values in files under this directory.
    metrics_dir = prepare_multiprocess(config.database)
    children: dict[int, tuple[int, int]] = {}  # pid -> (worker index, read end of its "serving" pipe)
    stopping = False
    failed = False

    def spawn(index: int) -> None:
        parent = os.getpid()
        readfd, writefd = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(readfd)
                _become_worker(parent)
                set_worker(index)
                worker(index, lambda: _notify(writefd))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # the worker's last word; nothing above it would print it
                log.exception("worker_crashed", worker=index, error=f"{type(exc).__name__}: {exc}")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(writefd)
        children[pid] = (index, readfd)

    def forward(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for index in range(config.workers):
        spawn(index)
    log.info("workers_started", workers=config.workers, pids=sorted(children), parent=os.getpid())
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index, readfd = children.pop(pid)
        worker_gone(pid)
        os.set_blocking(readfd, False)
        try:
            served = bool(os.read(readfd, 1))
        except BlockingIOError:
            served = False
        os.close(readfd)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            if code != 0:
                failed = True
                log.error("worker_exit_failed", child_worker=index, child_pid=pid, exit_code=code)
            continue
        log.error("worker_died", child_worker=index, child_pid=pid, exit_code=code, served=served)
        if not served:
            failed = True
            forward(signal.SIGTERM, None)  # it will not come up: stop the others too
            continue
        spawn(index)
    remove_multiprocess(metrics_dir)
    log.info("workers_stopped", failed=failed)
    return 1 if failed else 0


def _notify(fd: int) -> None:
    os.write(fd, b"1")


def _become_worker(parent: int) -> None:
    """In the child, before it serves: default signal dispositions, own process group, die with the parent."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        raise SystemExit(0)


def prepare_database(config: Config) -> None:
    """Create or migrate the usage table and replay any spool once, before workers open the database
    (the SQLite file, or PostgreSQL: gateway.ledger.backends)."""
    from gateway.billing.startup import close_limiter, open_limiter
    from gateway.ledger.backends import usage_sink
    from gateway.tasks.backends import task_store

    async def ready() -> None:
        writer = usage_sink(config)
        await writer.start()
        await writer.close()
        # The counters every worker shares, with spend rebuilt from the rows just readied and the holds
        # of unfinished tasks.
        store = task_store(config.database)
        await store.start()
        try:
            close_limiter(await open_limiter(config, fresh=True, held=store.reserved_by_key))
        finally:
            await store.close()

    run_loop(ready())
    # aiosqlite's thread ends just after close(); forking while it still runs would copy it half-way.
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(timeout=5)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this keeps odd platforms working
        asyncio.run(main)
    else:
        uvloop.run(main)
