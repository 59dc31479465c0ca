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

Against a Redis Cluster (refract with `[redis] mode = "cluster"`), name some of its nodes instead.
The names change there: a topic has one sharded channel `to:{room:lobby}` whose messages are
`<event>:<payload>`, and pushes come on `from:{room:lobby}:say`. Sharded pub/sub has no patterns,
so the topics to serve are named (--topics, default room:lobby):

    python docs/examples/channels_backend.py --cluster redis://10.0.0.1:6379,redis://10.0.0.2:6379
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
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PATTERN = "from:room:*"
TICK_TOPIC = "room:lobby"

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0

log = logging.getLogger("channels_backend")


class BadMessage(ValueError):
    """A client push that is not shaped as this backend expects."""


class SlotMoved(Exception):
    """The cluster moved a channel's slot to another node, which unsubscribes us from it."""


# What ends a session, to start another after a backoff. A cluster adds its own: no seed
# answers (RedisClusterException), a slot has no master (ClusterError), a slot moved
# (AskError covers MOVED, and SlotMoved).
REDIS_UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    ClusterError,
    AskError,
    SlotMoved,
)

Client = redis.Redis | RedisCluster


def split_channel(channel: str) -> tuple[str, str]:
    """`from:room:lobby:say` -> (`room:lobby`, `say`); in a cluster, `from:{room:lobby}:say`."""
    rest = channel.removeprefix("from:")
    topic, sep, event = rest.rpartition(":")
    if topic.startswith("{") and topic.endswith("}"):
        topic = topic[1:-1]  # the cluster's hash tag, which keeps a topic's channels in one slot
    if rest == channel or not sep or not topic or not event:
        raise BadMessage(f"not a from:<topic>:<event> channel: {channel!r}")
    return topic, event


def pushes_of(topic: str, event: str) -> str:
    """The sharded channel a cluster's gateway publishes `event` pushes of `topic` on."""
    return f"from:{{{topic}}}:{event}"


def to_topic(topic: str, event: str, payload: str, *, cluster: bool) -> tuple[str, str]:
    """The (channel, message) that has the gateway push `event` to every socket on `topic`."""
    if cluster:
        # No patterns in sharded pub/sub: one channel per topic, the event inside the message.
        return f"to:{{{topic}}}", f"{event}:{payload}"
    return f"to:{topic}:{event}", payload


def on_push(channel: str, data: bytes, *, cluster: bool = False) -> tuple[str, str] | None:
    """One client push in, at most one (channel, message) to publish out. Pure: no I/O."""
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
    return to_topic(topic, "said", json.dumps(said), cluster=cluster)


async def publish(client: Client, channel: str, message: str) -> None:
    # In a cluster the gateway listens with SSUBSCRIBE, which only SPUBLISH reaches.
    if isinstance(client, RedisCluster):
        await client.spublish(channel, message)
    else:
        await client.publish(channel, message)


async def handle(client: Client, channel: bytes, data: bytes) -> None:
    name = channel.decode(errors="replace")
    try:
        out = on_push(name, data, cluster=isinstance(client, RedisCluster))
    except BadMessage as err:
        log.warning("dropping bad message on %s: %s: %.200r", name, err, data)
        return
    if out is not None:
        await publish(client, *out)


async def listen(client: redis.Redis, on_subscribed: Callable[[], None]) -> None:
    async with client.pubsub() as pubsub:
        await pubsub.psubscribe(PATTERN)
        async for msg in pubsub.listen():
            if msg["type"] == "psubscribe":
                # Ready only once Redis confirms: a push published before that is lost.
                on_subscribed()
            elif msg["type"] == "pmessage":
                await handle(client, msg["channel"], msg["data"])


async def listen_sharded(
    client: RedisCluster, topics: Iterable[str], on_subscribed: Callable[[], None]
) -> None:
    """listen() for a Redis Cluster: SSUBSCRIBE to each topic's `say` pushes, on their node.

    One pubsub per channel: a redis-py ClusterPubSub reads its nodes one after the other, so a
    blocking read on one would starve a channel on another.
    """
    channels = [pushes_of(topic, "say") for topic in topics]
    wanted = {channel.encode() for channel in channels}
    confirmed: set[bytes] = set()

    async def listen_one(channel: str) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.ssubscribe(channel)
            while True:
                msg = await pubsub.get_sharded_message(timeout=None)
                kind = msg["type"] if msg else None
                if kind == "ssubscribe":
                    # Ready once every channel is confirmed, as in listen().
                    confirmed.add(msg["channel"])
                    if confirmed == wanted:
                        on_subscribed()
                elif kind == "sunsubscribe":
                    # Resharding or a failover moved the slot; redis-py does not follow it, so
                    # start over from a fresh view of the slots.
                    raise SlotMoved(f"the slot of {channel} moved")
                elif kind == "smessage":
                    await handle(client, msg["channel"], msg["data"])

    await first_to_finish(*(listen_one(channel) for channel in channels))


async def tick(client: Client, interval: float) -> None:
    n = 0
    cluster = isinstance(client, RedisCluster)
    while True:
        await asyncio.sleep(interval)
        n += 1
        await publish(client, *to_topic(TICK_TOPIC, "tick", json.dumps({"n": n}), cluster=cluster))


async def first_to_finish(*jobs: Awaitable[Any]) -> None:
    """Runs jobs until one ends, cancels the others, and re-raises what the first raised."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()  # re-raise a Redis error so the caller reconnects


async def run_session(
    client: Client, args: argparse.Namespace, stop: asyncio.Event, on_subscribed: Callable[[], None]
) -> None:
    """Serve over one client's connections until stopped or Redis fails."""
    if isinstance(client, RedisCluster):
        listener = listen_sharded(client, args.topics, on_subscribed)
    else:
        listener = listen(client, on_subscribed)
    await first_to_finish(listener, tick(client, args.interval), stop.wait())


def connect(args: argparse.Namespace) -> Client:
    if not args.cluster:
        return redis.Redis.from_url(args.redis_url, socket_keepalive=True)
    seeds = [urlsplit(url) for url in args.cluster]
    nodes = [ClusterNode(seed.hostname, seed.port or 6379) for seed in seeds]
    # The first seed's credentials, if any, are the cluster's.
    return RedisCluster(
        startup_nodes=nodes,
        username=seeds[0].username,
        password=seeds[0].password,
        socket_keepalive=True,
    )


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    announced = False
    backoff = INITIAL_BACKOFF_SECONDS
    if args.cluster:
        subscriptions = ", ".join(pushes_of(topic, "say") for topic in args.topics)
    else:
        subscriptions = PATTERN

    def on_subscribed() -> None:
        nonlocal announced, backoff
        backoff = INITIAL_BACKOFF_SECONDS
        if announced:
            log.info("re-subscribed to %s", subscriptions)
            return
        announced = True
        print("channels_backend ready", flush=True)  # a test harness waits for this line

    while not stop.is_set():
        try:
            # A new client per session: in a cluster, entering it reads afresh which node owns
            # which slot.
            async with connect(args) as client:
                await run_session(client, args, stop, on_subscribed)
        except REDIS_UNAVAILABLE as err:
            log.warning("redis unavailable (%s); retrying in %.1fs", err, backoff)
            try:
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    log.info("stopped")


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def seed_urls(text: str) -> list[str]:
    urls = [url.strip() for url in text.split(",") if url.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise argparse.ArgumentTypeError(f"not a redis://host:port URL: {url!r}")
    if not urls:
        raise argparse.ArgumentTypeError("needs at least one redis://host:port URL")
    return urls


def topic_list(text: str) -> list[str]:
    topics = [topic.strip() for topic in text.split(",") if topic.strip()]
    if not topics:
        raise argparse.ArgumentTypeError("needs at least one topic")
    return topics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
        help="Redis to use (default: $REDIS_URL or redis://127.0.0.1:6379)",
    )
    parser.add_argument(
        "--cluster",
        type=seed_urls,
        metavar="URL,URL,...",
        help="a Redis Cluster instead, from these seed nodes: sharded pub/sub "
        '(SSUBSCRIBE, SPUBLISH), as refract\'s mode = "cluster" expects',
    )
    parser.add_argument(
        "--topics",
        type=topic_list,
        metavar="TOPIC,...",
        help=f"with --cluster: the topics to serve (default: {TICK_TOPIC})",
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=5.0,
        help=f"seconds between ticks on {TICK_TOPIC} (default: 5)",
    )
    args = parser.parse_args(argv)
    if args.topics and not args.cluster:
        parser.error("--topics needs --cluster (standalone, every room:* topic is served)")
    if args.cluster and not hasattr(RedisCluster, "pubsub"):
        parser.error("--cluster needs redis-py 8 or newer: pip install -r requirements.txt")
    args.topics = args.topics or [TICK_TOPIC]
    return args


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main(parse_args()))
