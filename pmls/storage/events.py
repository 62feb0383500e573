"""Outbox relay: publish committed events onto the Redis stream, at least once, in commit order."""

from __future__ import annotations

import json
import logging

from redis.exceptions import RedisError

from pmls.storage.cache import Cache
from pmls.storage.postgres import Outbox

log = logging.getLogger("pmls.events")


async def relay_outbox(outbox: Outbox, cache: Cache, *, batch: int = 100) -> int:
    """Publish what is pending; stop at the first failure so order is kept. Returns the number sent."""
    sent: list[int] = []
    try:
        for event in await outbox.unpublished(batch):
            await cache.publish_event(
                str(event["event_id"]), event["event_type"], json.dumps(event["payload"])
            )
            sent.append(event["id"])
    except (RedisError, OSError) as exc:
        log.warning("event relay paused, redis unavailable: %s", exc)
    if sent:
        await outbox.mark_published(sent)
    return len(sent)
