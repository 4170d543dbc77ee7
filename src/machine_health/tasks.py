"""The API's background tasks (micro-batchers, the archive writer, worker sync): how they take
a batch from their queue and how they are stopped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

T = TypeVar("T")


async def take_batch(queue: asyncio.Queue[T], limit: int) -> list[T]:
    """Wait for one item, then add what is already queued, up to `limit` items in all."""
    batch = [await queue.get()]
    while len(batch) < limit and not queue.empty():
        batch.append(queue.get_nowait())
    return batch


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel each task and wait until it has stopped, so nothing runs after a shutdown."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task
