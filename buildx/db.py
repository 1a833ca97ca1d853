"""Database reads from async code (consumers, async views) that give their connection back.

Channels' ``database_sync_to_async`` closes old connections around the call, but since asgiref 3.13
the call itself runs inside a copy of the caller's context (``context.run``) and Django keeps its
connections in that context: the close, outside it, never sees the connection the call opened. With a
pool (PostgreSQL) every such call then keeps one connection until the garbage collector finds it, and
a busy web process runs out of its pool (``PoolTimeout`` after 10 s). ``read_async`` closes inside the
call, where the connection is: with the pool, closing hands it back.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def read_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``func`` (sync, short, read-only or self-committing) as a coroutine run on any thread of the
    pool (not the one thread-sensitive thread: many sockets at once would queue there), which hands
    its database connection back before it returns."""

    @functools.wraps(func)
    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return database_sync_to_async(closing, thread_sensitive=False)


async def hand_back_connections() -> None:
    """Give back the connections this request's context holds, from async code that goes on for long
    without the database (a stream): Django would otherwise keep them until the response ends."""
    await database_sync_to_async(close_old_connections)()
