"""The event outbox on the real PostgreSQL and Redis: relays running at once (the training worker's loop and the
completing activity's) publish each committed event exactly once, in commit order."""

from __future__ import annotations

import asyncio
import uuid

from pmls.storage.cache import EVENTS_STREAM, Cache
from pmls.storage.events import relay_outbox
from pmls.storage.postgres import Outbox, create_pool
from tests.helpers import unique


def test_concurrent_relays_publish_each_event_once_in_order(settings):
    async def scenario() -> tuple[list[str], list[str]]:
        pool = await create_pool(settings.database.url)
        cache = Cache(settings.redis.url, timeout=5.0)
        try:
            ids, tag = [str(uuid.uuid4()) for _ in range(30)], unique("relay")
            async with pool.acquire() as conn:
                for n, event_id in enumerate(ids):
                    await conn.execute(
                        """INSERT INTO event_outbox (event_id, event_type, aggregate_id, payload)
                           VALUES ($1, 'relay_test', $2, $3)""",
                        uuid.UUID(event_id),
                        tag,
                        {"n": n},
                    )
            outbox = Outbox(pool)
            # Four relays at once, in small batches: without the relay lock each reads the same pending rows.
            await asyncio.gather(*(relay_outbox(outbox, cache, batch=7) for _ in range(4)))
            while await relay_outbox(outbox, cache, batch=7):
                pass
            entries = await cache.client.xrange(EVENTS_STREAM)
            wanted = set(ids)
            return ids, [fields["event_id"] for _id, fields in entries if fields["event_id"] in wanted]
        finally:
            await cache.close()
            await pool.close()

    ids, published = asyncio.run(scenario())
    assert published == ids  # each once (the stream is the source of truth), in commit order
