"""Outbox relay: publish committed events onto the Redis stream, at least once, in commit order."""

from __future__ import annotations

import json
import logging

from redis.exceptions import RedisError

from pmls.storage.cache import Cache
from pmls.storage.postgres import Outbox

log = logging.getLogger("pmls.events")


async def relay_outbox(outbox: Outbox, cache: Cache, *, batch: int = 100) -> int:
    """Publish what is pending (one relay at a time; see ``Outbox.relay``); stop at the first failure so order is
    kept. Returns the number sent (0 when another relay is at it)."""

    async def publish(event: dict) -> None:
        await cache.publish_event(str(event["event_id"]), event["event_type"], json.dumps(event["payload"]))

    try:
        return await outbox.relay(publish, batch) or 0
    except (RedisError, OSError) as exc:
        log.warning("event relay paused, redis unavailable: %s", exc)
        return 0
