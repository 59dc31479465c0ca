#!/usr/bin/env python3
"""Example backend for refract's Channels endpoint (docs/channels.md).

Browsers join Phoenix topics through the gateway; this process talks only to Redis:

    browser  channel.push("say", {"text": "hi"}) on room:lobby
      -> gateway PUBLISH from:room:lobby:say {"text": "hi"}
      -> this backend PUBLISH to:room:lobby:said {"text": "hi", "at": "2025-01-01T12:00:00+00:00"}
      -> gateway pushes event "said" to every socket joined to room:lobby

It also publishes to:room:lobby:tick {"n": 1}, {"n": 2}, ... every --interval seconds.

Topics contain ':' and events do not, so a Redis channel name is split at its LAST ':'.
Pub/sub is at-most-once: what is published while this backend is down or reconnecting is lost.
docs/examples/channels.html is a page to try it with.

    pip install -r docs/examples/requirements.txt
    python docs/examples/channels_backend.py --redis-url redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PATTERN = "from:room:*"
TICK_TOPIC = "room:lobby"

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0

log = logging.getLogger("channels_backend")


class BadMessage(ValueError):
    """A client push that is not shaped as this backend expects."""


def split_channel(channel: str) -> tuple[str, str]:
    """`from:room:lobby:say` -> (`room:lobby`, `say`)."""
    rest = channel.removeprefix("from:")
    topic, sep, event = rest.rpartition(":")
    if rest == channel or not sep or not topic or not event:
        raise BadMessage(f"not a from:<topic>:<event> channel: {channel!r}")
    return topic, event


def on_push(channel: str, data: bytes) -> tuple[str, str] | None:
    """One client push in, at most one (channel, payload) to publish out. Pure: no I/O."""
    topic, event = split_channel(channel)
    if event != "say":
        log.info("ignoring event %r on %s", event, topic)
        return None
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):  # ValueError covers invalid UTF-8 too
        raise BadMessage("payload is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        raise BadMessage('payload is not {"text": string}')
    said = {"text": payload["text"], "at": datetime.now(UTC).isoformat(timespec="milliseconds")}
    return f"to:{topic}:said", json.dumps(said)


async def listen(pubsub: PubSub, client: redis.Redis, on_subscribed: Callable[[], None]) -> None:
    await pubsub.psubscribe(PATTERN)
    async for msg in pubsub.listen():
        if msg["type"] == "psubscribe":
            # Ready only once Redis confirms: a push published before that is lost.
            on_subscribed()
            continue
        if msg["type"] != "pmessage":
            continue
        channel = msg["channel"].decode(errors="replace")
        try:
            out = on_push(channel, msg["data"])
        except BadMessage as err:
            log.warning("dropping bad message on %s: %s: %.200r", channel, err, msg["data"])
            continue
        if out is not None:
            await client.publish(*out)


async def tick(client: redis.Redis, interval: float) -> None:
    n = 0
    while True:
        await asyncio.sleep(interval)
        n += 1
        await client.publish(f"to:{TICK_TOPIC}:tick", json.dumps({"n": n}))


async def run_session(
    client: redis.Redis, interval: float, stop: asyncio.Event, on_subscribed: Callable[[], None]
) -> None:
    """Serve over one pub/sub connection until stopped or Redis fails."""
    async with client.pubsub() as pubsub:
        tasks = [
            asyncio.create_task(listen(pubsub, client, on_subscribed)),
            asyncio.create_task(tick(client, interval)),
            asyncio.create_task(stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raise a Redis error so the caller reconnects


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    client = redis.Redis.from_url(args.redis_url, socket_keepalive=True)
    announced = False
    backoff = INITIAL_BACKOFF_SECONDS

    def on_subscribed() -> None:
        nonlocal announced, backoff
        backoff = INITIAL_BACKOFF_SECONDS
        if announced:
            log.info("re-subscribed to %s", PATTERN)
            return
        announced = True
        print("channels_backend ready", flush=True)  # a test harness waits for this line

    try:
        while not stop.is_set():
            try:
                await run_session(client, args.interval, stop, on_subscribed)
            except (RedisConnectionError, RedisTimeoutError) as err:
                log.warning("redis unavailable (%s); retrying in %.1fs", err, backoff)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    finally:
        await client.aclose()
    log.info("stopped")


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
        help="Redis to use (default: $REDIS_URL or redis://127.0.0.1:6379)",
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=5.0,
        help=f"seconds between ticks on {TICK_TOPIC} (default: 5)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main(parse_args()))
