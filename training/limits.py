"""What one user, and one web process, may hold at once: open WebSockets and running predictions.

Open WebSockets. Every socket costs the process a task, buffers and channel-layer membership; a script
that opens thousands (or a user with fifty tabs) must not starve everyone else. A socket takes a slot
when it connects and gives it back when it goes: at most ``WS_MAX_PER_USER`` per user and
``WS_MAX_PER_PROCESS`` per process. The process's count lives in memory (it dies with the process).
A user's sockets may be spread over several Daphne processes, so with Redis their count lives there:
one sorted set per user, a member per socket scored with the time it was last seen. Each socket
refreshes its member every ``WS_HEARTBEAT_SECONDS``; members not seen for three heartbeats (their
process crashed) are dropped by the next connect, so a dead process's slots come back on their own.
Taking a slot is one Lua script (prune, count, add), atomic in Redis: two connects cannot both take
the last slot. Without Redis (embedded mode: one process) the per-user count is in memory too.

Predictions. A prediction holds a web thread (and, for code written by the assistant, a sandbox) for
up to ``PREDICT_SANDBOX_SECONDS``: one user sending many at once would hold every thread of a process.
A user runs at most ``PREDICT_MAX_CONCURRENT_PER_USER`` at a time and asks at most
``PREDICT_RATE_PER_MINUTE`` a minute; over either the answer is a 429 with ``Retry-After``. Both are
kept in the Django cache (Redis in production, so across processes) with atomic operations only:
``add`` (set if absent) takes one of the user's numbered slots and opens a minute's window, ``incr``
counts the requests in it. A slot expires on its own after twice the sandbox's limit, longer than any
prediction takes, so a request whose process died cannot hold it for ever. While a prediction waits on
a sandboxed child it holds no database connection (``db_connections_release``): the pool is small, and
shared by all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.utils.translation import gettext as _

logger = logging.getLogger(__name__)

# --- Open WebSockets ---------------------------------------------------------------------------------

# Close codes the page understands (static/js/run-live.js). 4429: an application code, after HTTP's
# 429; 1013 is RFC 6455's "Try Again Later", for a server over its capacity.
USER_CAP_CODE = 4429
PROCESS_CAP_CODE = 1013
MISSED_HEARTBEATS = 3  # a member not refreshed for this many heartbeats belongs to a dead process
REDIS_CONNECTIONS = 20  # per process: a slot take or a heartbeat holds one for a round trip
REDIS_POOL_WAIT_S = 20.0  # as long as Daphne lets a handshake take

# Redis's clock, not the web hosts': their clocks may disagree, and a score is compared with others'.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
# KEYS[1]: the user's set. ARGV: member, cap, seconds a member lives without a heartbeat.
_TAKE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])))
return 1
"""
)
# XX: a heartbeat never brings back a member that was released (or pruned) meanwhile.
_BEAT = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return 1
"""
)


@dataclass(frozen=True)
class SocketRefused:
    """Why a socket may not stay open: a WebSocket close code and a reason the page shows."""

    code: int
    reason: str


class _LoopSockets:
    """The sockets of one event loop (one Daphne process runs one): counts and the Redis client."""

    _by_loop: dict[asyncio.AbstractEventLoop, _LoopSockets] = {}

    def __init__(self) -> None:
        self.open = 0
        self.by_user: collections.Counter[int] = collections.Counter()  # embedded mode only
        self.redis: aioredis.Redis | None = None
        self.redis_url = ""

    @classmethod
    def current(cls) -> _LoopSockets:
        loop = asyncio.get_running_loop()
        for other in [other for other in cls._by_loop if other.is_closed()]:
            del cls._by_loop[other]  # tests run one loop each
        return cls._by_loop.setdefault(loop, cls())

    def client(self) -> aioredis.Redis:
        # A client belongs to the loop that made it (its connections do); one per loop and URL.
        # A pool that waits for a free connection: redis-py's default pool raises past 100, and a class
        # of browsers connecting at once (a slot take each) was refused with "Too many connections"
        # (bench/stream.py, 500 sockets), and the slots of the sockets that went were not given back.
        if self.redis is None or self.redis_url != settings.REDIS_URL:
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.REDIS_URL, max_connections=REDIS_CONNECTIONS, timeout=REDIS_POOL_WAIT_S
            )
            self.redis = aioredis.Redis(connection_pool=pool)
            self.redis_url = settings.REDIS_URL
        return self.redis


def _user_key(user_id: int) -> str:
    # In the cache's namespace (KEY_PREFIX), so that deployments, and tests, sharing a Redis do not mix.
    return cache.make_key(f"ws:user:{user_id}")


def _member_lifetime() -> float:
    return MISSED_HEARTBEATS * settings.WS_HEARTBEAT_SECONDS


class SocketSlot:
    """One open socket, counted against its user's and its process's caps until ``release()``."""

    def __init__(self, *, sockets: _LoopSockets, user_id: int, member: str | None) -> None:
        self.sockets = sockets
        self.user_id = user_id
        self.member = member  # its entry in the user's Redis set; None in embedded mode
        self.heartbeat: asyncio.Task | None = None
        self.released = False

    async def _beat(self) -> None:
        if self.member is None:
            return  # embedded mode: no Redis entry to keep alive
        script = self.sockets.client().register_script(_BEAT)
        while True:
            await asyncio.sleep(settings.WS_HEARTBEAT_SECONDS)
            try:
                await script(keys=[_user_key(self.user_id)], args=[self.member, _member_lifetime()])
            except Exception:  # Redis away for a moment: the next beat tries again
                logger.warning("WebSocket slot heartbeat failed", exc_info=True)

    async def release(self) -> None:
        """Give the slot back (once; later calls do nothing)."""
        if self.released:
            return
        self.released = True
        self.sockets.open -= 1
        if self.member is None:
            self.sockets.by_user[self.user_id] -= 1
            if self.sockets.by_user[self.user_id] <= 0:
                del self.sockets.by_user[self.user_id]
            return
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.heartbeat
        try:
            await self.sockets.client().zrem(_user_key(self.user_id), self.member)
        except Exception:  # the member then lapses without heartbeats
            logger.warning("Could not release a WebSocket slot in Redis", exc_info=True)


async def socket_slot_take(*, user_id: int) -> SocketSlot | SocketRefused:
    """A slot for one more socket of ``user_id`` in this process, or why not."""
    sockets = _LoopSockets.current()
    if sockets.open >= settings.WS_MAX_PER_PROCESS:
        return SocketRefused(PROCESS_CAP_CODE, "BuildX is busy: try again in a minute")
    refused = SocketRefused(USER_CAP_CODE, "Too many open connections: close other BuildX tabs")
    if not settings.REDIS_URL:
        if sockets.by_user[user_id] >= settings.WS_MAX_PER_USER:
            return refused
        sockets.open += 1
        sockets.by_user[user_id] += 1
        return SocketSlot(sockets=sockets, user_id=user_id, member=None)
    # Counted before the await, so that connects racing on this loop cannot pass the process cap.
    sockets.open += 1
    member = uuid.uuid4().hex
    try:
        taken = await sockets.client().register_script(_TAKE)(
            keys=[_user_key(user_id)], args=[member, settings.WS_MAX_PER_USER, _member_lifetime()]
        )
    except BaseException:
        sockets.open -= 1
        raise
    if not taken:
        sockets.open -= 1
        return refused
    slot = SocketSlot(sockets=sockets, user_id=user_id, member=member)
    slot.heartbeat = asyncio.get_running_loop().create_task(slot._beat())
    return slot


# --- Predictions ---------------------------------------------------------------------------------------

# Retry-After for a user whose slots are all taken: most predictions take well under a second.
BUSY_RETRY_AFTER_S = 2


@dataclass(frozen=True)
class Busy:
    """Why a request must wait: a sentence for the user, and seconds for ``Retry-After``."""

    message: str
    retry_after: int


def _prediction_rate_hit(user_id: int) -> Busy | None:
    """Count one request in this minute's window; a Busy once the user is over the rate."""
    limit = settings.PREDICT_RATE_PER_MINUTE
    if limit <= 0:
        return None
    # A minute's window opens with the user's first request in it (add: the first one wins), and its
    # count is kept under its start time, so that the next window counts afresh.
    now = time.time()
    cache.add(f"predict:rate-window:{user_id}", now, timeout=60)
    started = cache.get(f"predict:rate-window:{user_id}", now)
    key = f"predict:rate:{user_id}:{started}"
    cache.add(key, 0, timeout=90)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr: count this request alone
        count = 1
    if count <= limit:
        return None
    wait = max(1, math.ceil(started + 60 - now))
    return Busy(
        message=_(
            "You have sent %(n)d predictions within a minute, the most BuildX answers. "
            "Try again in %(s)d seconds."
        )
        % {"n": limit, "s": wait},
        retry_after=wait,
    )


def _prediction_slot_take(user_id: int) -> tuple[str, str] | None:
    """(key, token) of a free slot of the user's, now taken; None when all are taken."""
    token = uuid.uuid4().hex
    lifetime = 2 * settings.PREDICT_SANDBOX_SECONDS  # longer than any prediction takes
    for number in range(settings.PREDICT_MAX_CONCURRENT_PER_USER):
        key = f"predict:running:{user_id}:{number}"
        if cache.add(key, token, timeout=lifetime):
            return key, token
    return None


def _prediction_slot_release(key: str, token: str) -> None:
    # Only our own: after its lifetime the slot may be another request's. (Not atomic, but the
    # lifetime is twice the longest prediction, so the slot is still ours here.)
    if cache.get(key) == token:
        cache.delete(key)


@contextlib.contextmanager
def prediction_admitted(*, user_id: int) -> Iterator[Busy | None]:
    """None while the request may predict (one of the user's slots held until the block ends), or
    why it must wait."""
    busy = _prediction_rate_hit(user_id)
    if busy is not None:
        yield busy
        return
    slot = _prediction_slot_take(user_id)
    if slot is None:
        n = settings.PREDICT_MAX_CONCURRENT_PER_USER
        yield Busy(
            message=_(
                "You already have %(n)d predictions running, the most at once. Try again in a few "
                "seconds, when one has finished."
            )
            % {"n": n},
            retry_after=BUSY_RETRY_AFTER_S,
        )
        return
    try:
        yield None
    finally:
        _prediction_slot_release(*slot)


def db_connections_release() -> None:
    """Give this thread's database connections back (to the pool) before a long wait that needs none;
    the next query opens one again. Not inside a transaction, which closing would end."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
