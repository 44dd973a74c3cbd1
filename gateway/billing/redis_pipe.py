"""One Redis connection per process for the limit scripts, batched: every EVALSHA asked in the same
event-loop turn, or while a batch is out, goes in the next single write (gateway.billing.redis_counters).

The commands are packed here and sent with redis-py's public connection calls (`make_connection`,
`send_packed_command`, `read_response`, `disconnect`, the same in redis-py 5.0.1 and 8.x): a quarter of
the client CPU of `Redis.evalsha` per admission, measured (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

log = structlog.get_logger("gateway.billing")

TIMEOUT_S = 0.5  # connect and each reply: a dead Redis costs a request this much at most, once a second
BATCH = 512  # background writes, or admissions, sent in one pipeline

Call = tuple[bytes, "asyncio.Future[Any]", AsyncScript]  # an EVALSHA's bytes, its answer, its script

class ScriptPipe:
    """Script calls on a connection of their own, sent in batches: the calls asked while a batch is on
    its way (or, when none is, in the same event-loop turn: nothing waits on a timer) go as the next
    one, in one write, and each call's answer goes back to its caller. Each script is atomic on Redis
    as ever; a batch is not a transaction, and nothing in it waits for another call's answer.

    A batch fails as one call would: when the connection breaks, or a reply does not come within
    TIMEOUT_S, each call of the batch fails with that error, and the next batch connects again. An
    error Redis answers is its call's alone; NOSCRIPT (scripts flushed) loads the script and sends
    those calls once more.

    It uses redis-py's public connection calls (`ConnectionPool.make_connection`,
    `send_packed_command`, `read_response`, `disconnect`, alike from 5.0 to 8.x) and builds the
    commands' bytes itself: `execute_command` around the same calls (a connection out of the pool and
    back under a lock, a check for stale data, events, the command packed again, response callbacks)
    cost ~100 us of CPU a call.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.round_trips = 0  # batches written
        self._conn: AbstractConnection | None = None
        self._queue: list[Call] = []
        self._task: asyncio.Task[None] | None = None

    def call(self, script: AsyncScript, command: bytes) -> asyncio.Future[Any]:
        """`command` (an EVALSHA of `script`, from `evalsha` or `evalsha_head`) sent with the next batch."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, answer, script))
        if self._task is None:
            self._task = loop.create_task(self._run())
        return answer

    async def gather(self, calls: Iterable[tuple[AsyncScript, bytes]]) -> list[object]:
        """Each call's answer, or the error it got."""
        answers: list[object] = await asyncio.gather(*[self.call(*call) for call in calls], return_exceptions=True)
        return answers

    async def _run(self) -> None:
        try:
            while self._queue:
                if len(self._queue) <= BATCH:
                    batch, self._queue = self._queue, []
                else:
                    batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                try:
                    await self._send(batch)
                except Exception as exc:  # not expected; but no caller is left waiting for ever
                    for _, answer, _ in batch:
                        _fail(answer, exc)
        except BaseException:  # cancelled (the loop is closing): nobody is left to send the rest
            for _, answer, _ in self._queue:
                answer.cancel()
            self._queue.clear()
            raise
        finally:
            self._task = None

    async def _send(self, batch: list[Call], reload: bool = True, again: bool = True) -> None:
        conn = self._conn
        if conn is None:
            conn = self._conn = self.redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        reused, replied = conn.is_connected, False
        missing = []
        try:
            self.round_trips += 1
            await conn.send_packed_command(b"".join([command for command, _, _ in batch]), check_health=False)
            for call in batch:
                try:
                    reply = await conn.read_response()
                except NoScriptError as exc:
                    if reload:
                        missing.append(call)
                    else:
                        _fail(call[1], exc)
                except ResponseError as exc:  # this call's error, its reply read: the next ones follow
                    _fail(call[1], exc)
                else:
                    if not call[1].done():  # its caller may have gone (cancelled)
                        call[1].set_result(reply)
                replied = True
        except Exception as exc:  # the connection broke, or a reply did not come in time
            with contextlib.suppress(Exception):  # (redis-py mostly has): the next batch connects again
                await conn.disconnect(nowait=True)
            if again and reused and not replied and isinstance(exc, RedisConnectionError):
                # Most likely closed by Redis while it sat idle (a restart): once more, on a new connection,
                # as the pool would have done (a batch Redis ran before its connection broke then runs twice).
                await self._send(batch, reload, again=False)
                return
            for _, answer, _ in batch:
                _fail(answer, exc)
            return
        except BaseException:
            for _, answer, _ in batch:
                answer.cancel()
            raise
        if missing:  # the scripts were flushed (SCRIPT FLUSH, a restarted Redis): load them, send those again
            for script in {id(call[2]): call[2] for call in missing}.values():
                try:
                    await self.redis.script_load(script.script)
                except Exception as exc:
                    for _, answer, _ in missing:
                        _fail(answer, exc)
                    return
            await self._send(missing, reload=False, again=again)

    async def aclose(self) -> None:
        """Send what is queued, then close the connection."""
        if self._task is not None:
            await self._task
        if self._conn is not None:
            await self._conn.disconnect()


def evalsha_head(script: AsyncScript, numkeys: int, numargs: int) -> bytes:
    """The start of an EVALSHA of `script` with `numkeys` keys and `numargs` arguments, RESP-encoded."""
    return b"*%d\r\n$7\r\nEVALSHA\r\n%s%s" % (3 + numkeys + numargs, _bulk(script.sha), _bulk(numkeys))


def evalsha(script: AsyncScript, keys: Sequence[str], args: Sequence[str | float]) -> bytes:
    return evalsha_head(script, len(keys), len(args)) + b"".join(map(_bulk, [*keys, *args]))


def _bulk(value: str | float) -> bytes:
    """One RESP bulk string, the value encoded as redis-py encodes arguments (numbers by their repr)."""
    data = value.encode() if isinstance(value, str) else repr(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _fail(answer: asyncio.Future[Any], exc: BaseException) -> None:
    if not answer.done():
        answer.set_exception(exc)
