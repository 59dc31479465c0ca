#!/usr/bin/env python3
"""Example refract backend for the `/quotes` route.

One process plays both services of the route, `quoteservice` and
`chartservice`. They share the request channel (`input` by default), so the
gateway publishes each client event there once and both see it; each answers
only the requests it owns.

Client commands (WebSocket text frames):

    ACME          -> quoteservice: {"kind":"quote","symbol":"ACME","price":101.23}
    chart ACME    -> chartservice: {"kind":"chart","symbol":"ACME","points":[...5 floats...]}
    bye           -> quoteservice: reply of type "drop"; the gateway closes with 1000
    anything else -> quoteservice: {"kind":"error","error":"unknown symbol"}

quoteservice also greets every new client and pushes a price tick to every
connected client every --interval seconds.

Redis pub/sub is at-most-once: an event published while this service is down
or reconnecting is lost. The service copes by adopting clients it first hears
of through a `message` event, and by forgetting clients the gateway reports as
`notconnected`.

Run it next to refract (routes.example.toml already routes `/quotes` here):

    pip install -r docs/examples/requirements.txt
    python docs/examples/quotes_service.py --redis-url redis://127.0.0.1:6379

Against a Redis Cluster (refract with `[redis] mode = "cluster"`), name some of
its nodes instead; the service then uses sharded pub/sub, SSUBSCRIBE and
SPUBLISH, as the gateway does (a plain SUBSCRIBE would hear nothing):

    python docs/examples/quotes_service.py --cluster redis://10.0.0.1:6379,redis://10.0.0.2:6379
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import random
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterError, RedisClusterException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

QUOTE_SERVICE = "quoteservice"
CHART_SERVICE = "chartservice"

# Every reply names this channel as its own `responseChannel`, so the gateway
# has somewhere to say `notconnected` when the client is already gone.
NOTIFY_CHANNEL = "quotes-example.notify"

SYMBOLS = ("ACME", "GLOBEX", "INITECH")
OPENING_PRICES = {"ACME": 100.0, "GLOBEX": 50.0, "INITECH": 20.0}
CHART_POINTS = 5

# Fixed so that two runs print the same prices, which keeps demos and
# transcripts comparable.
PRICE_SEED = 1337

INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0

log = logging.getLogger("quotes_service")


class BadEvent(ValueError):
    """A published event that is not valid JSON or not shaped as the protocol says."""


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


@dataclass(frozen=True)
class Outgoing:
    """One PUBLISH to make: a reply to a single client."""

    conn_id: str
    channel: str
    payload: str


class Market:
    """A seeded random walk per symbol, keeping the last few prices for charts."""

    def __init__(self, seed: int = PRICE_SEED) -> None:
        self._rng = random.Random(seed)
        self._history = {
            symbol: deque([OPENING_PRICES[symbol]], maxlen=CHART_POINTS) for symbol in SYMBOLS
        }
        # Pre-fill so the very first chart already has CHART_POINTS points.
        for _ in range(CHART_POINTS - 1):
            for symbol in SYMBOLS:
                self.step(symbol)
        self._tick_order = itertools.cycle(SYMBOLS)

    def price(self, symbol: str) -> float:
        return self._history[symbol][-1]

    def points(self, symbol: str) -> list[float]:
        return list(self._history[symbol])

    def step(self, symbol: str) -> float:
        # Multiplicative steps keep prices positive; the floor guards rounding.
        moved = self.price(symbol) * (1.0 + self._rng.gauss(0.0, 0.01))
        price = max(0.01, round(moved, 2))
        self._history[symbol].append(price)
        return price

    def tick(self) -> tuple[str, float]:
        """Move the next symbol in turn, so every symbol ticks at a steady rate."""
        symbol = next(self._tick_order)
        return symbol, self.step(symbol)


class QuotesBackend:
    """The protocol logic, free of I/O: events in, replies out.

    Keeping Redis out of here means every rule can be exercised by feeding it
    bytes, and a bad event can only ever raise BadEvent.
    """

    def __init__(self, market: Market) -> None:
        self.market = market
        # Connection id -> the gateway response channel that reaches that client.
        self.clients: dict[str, str] = {}

    def on_request(self, raw: bytes) -> list[Outgoing]:
        event = _decode_object(raw)
        conn_id = _require_str(event, "id")
        kind = _require_str(event, "type")

        if kind == "disconnect":
            self.forget(conn_id)
            return []
        if kind not in ("connect", "message"):
            # Newer gateways may add event types; ignoring them keeps us compatible.
            log.info("ignoring event type %r for %s", kind, conn_id)
            return []

        response_channel = _require_str(event, "responseChannel")
        if kind == "connect":
            self.clients[conn_id] = response_channel
            welcome = {"kind": "welcome", "symbols": list(SYMBOLS)}
            return [_reply(conn_id, response_channel, QUOTE_SERVICE, welcome)]

        text = _require_str(event, "message", allow_empty=True)
        binary = event.get("binary", False)
        if not isinstance(binary, bool):
            raise BadEvent("'binary' must be a boolean")
        # A message from a client we never saw connect means we missed its
        # `connect` (we started late, or Redis blipped): adopt it so it gets ticks.
        self.clients[conn_id] = response_channel
        if binary:
            error = {"kind": "error", "error": "binary frames are not supported"}
            return [_reply(conn_id, response_channel, QUOTE_SERVICE, error)]
        return [self._answer(conn_id, response_channel, text)]

    def _answer(self, conn_id: str, channel: str, text: str) -> Outgoing:
        words = text.split()
        if len(words) == 1 and words[0].lower() == "bye":
            # The gateway sends `disconnect` after closing; stop ticking right away.
            self.forget(conn_id)
            return _reply(conn_id, channel, QUOTE_SERVICE, {"kind": "bye"}, reply_type="drop")
        if len(words) == 1 and words[0].upper() in SYMBOLS:
            symbol = words[0].upper()
            quote = {"kind": "quote", "symbol": symbol, "price": self.market.price(symbol)}
            return _reply(conn_id, channel, QUOTE_SERVICE, quote)
        if len(words) == 2 and words[0].lower() == "chart" and words[1].upper() in SYMBOLS:
            symbol = words[1].upper()
            chart = {"kind": "chart", "symbol": symbol, "points": self.market.points(symbol)}
            return _reply(conn_id, channel, CHART_SERVICE, chart)
        # Both services see every message; quoteservice alone owns the error
        # reply so the client never gets two.
        error = {"kind": "error", "error": "unknown symbol"}
        return _reply(conn_id, channel, QUOTE_SERVICE, error)

    def on_notify(self, raw: bytes) -> None:
        event = _decode_object(raw)
        conn_id = _require_str(event, "id")
        kind = _require_str(event, "type")
        if kind == "notconnected":
            self.forget(conn_id)
        else:
            log.info("ignoring %r notification for %s", kind, conn_id)

    def on_tick(self) -> list[Outgoing]:
        symbol, price = self.market.tick()
        tick = {"kind": "tick", "symbol": symbol, "price": price}
        return [
            _reply(conn_id, channel, QUOTE_SERVICE, tick)
            for conn_id, channel in self.clients.items()
        ]

    def forget(self, conn_id: str) -> None:
        if self.clients.pop(conn_id, None) is not None:
            log.info("forgot client %s (%d left)", conn_id, len(self.clients))


def _decode_object(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except ValueError as err:  # also covers invalid UTF-8
        raise BadEvent(f"invalid JSON: {err}") from None
    except RecursionError:  # absurdly deep nesting
        raise BadEvent("invalid JSON: nested too deeply") from None
    if not isinstance(event, dict):
        raise BadEvent("event is not a JSON object")
    return event


def _require_str(event: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = event.get(key)
    if not isinstance(value, str):
        raise BadEvent(f"{key!r} must be a string")
    if not value and not allow_empty:
        raise BadEvent(f"{key!r} must not be empty")
    return value


def _reply(
    conn_id: str,
    channel: str,
    service: str,
    body: dict[str, Any],
    *,
    reply_type: str = "message",
) -> Outgoing:
    # The client-facing `message` is itself JSON text: the gateway relays the
    # string verbatim as one WebSocket text frame.
    payload = {
        "id": conn_id,
        "type": reply_type,
        "service": service,
        "message": json.dumps(body, separators=(",", ":")),
        "responseChannel": NOTIFY_CHANNEL,
    }
    return Outgoing(conn_id, channel, json.dumps(payload, separators=(",", ":")))


async def publish(client: Client, backend: QuotesBackend, outgoing: Iterable[Outgoing]) -> None:
    batch = list(outgoing)
    if not batch:
        return
    # One round trip however many clients a tick goes to (in a cluster, one per node).
    async with client.pipeline(transaction=False) as pipe:
        # In a cluster the gateway listens with SSUBSCRIBE, which only SPUBLISH reaches.
        send = pipe.spublish if isinstance(client, RedisCluster) else pipe.publish
        for item in batch:
            send(item.channel, item.payload)
        receivers = await pipe.execute()
    for item, count in zip(batch, receivers, strict=True):
        # Nobody subscribed to a response channel means that gateway node is
        # gone, and with it the client: no `notconnected` will ever come.
        if count == 0:
            backend.forget(item.conn_id)


def confirmer(
    channels: Iterable[str], on_subscribed: Callable[[], None]
) -> Callable[[bytes], None]:
    """Returns the callback for each subscribe confirmation: on_subscribed runs once all came.

    Ready only once Redis confirms: a PUBLISH before that is lost. redis-py
    re-subscribes by itself after a brief reconnect, which repeats these
    confirmations; announce only the first set.
    """
    wanted = {channel.encode() for channel in channels}
    confirmed: set[bytes] = set()

    def confirm(channel: bytes) -> None:
        if confirmed != wanted:
            confirmed.add(channel)
            if confirmed == wanted:
                on_subscribed()

    return confirm


async def dispatch(
    client: Client, backend: QuotesBackend, request_channel: str, channel: bytes, data: bytes
) -> None:
    try:
        if channel == request_channel.encode():
            await publish(client, backend, backend.on_request(data))
        else:
            backend.on_notify(data)
    except BadEvent as err:
        name = channel.decode(errors="replace")
        log.warning("dropping bad event on %s: %s: %.200r", name, err, data)


async def listen(
    client: redis.Redis,
    backend: QuotesBackend,
    request_channel: str,
    on_subscribed: Callable[[], None],
) -> None:
    channels = (request_channel, NOTIFY_CHANNEL)
    confirm = confirmer(channels, on_subscribed)
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(*channels)
        async for msg in pubsub.listen():
            if msg["type"] == "subscribe":
                confirm(msg["channel"])
            elif msg["type"] == "message":
                await dispatch(client, backend, request_channel, msg["channel"], msg["data"])


async def listen_sharded(
    client: RedisCluster,
    backend: QuotesBackend,
    request_channel: str,
    on_subscribed: Callable[[], None],
) -> None:
    """listen() for a Redis Cluster: SSUBSCRIBE, each channel on the node that owns its slot.

    One pubsub per channel: a redis-py ClusterPubSub reads its nodes one after
    the other, so a blocking read on one would starve a channel on another.
    """
    channels = (request_channel, NOTIFY_CHANNEL)
    confirm = confirmer(channels, on_subscribed)

    async def listen_one(channel: str) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.ssubscribe(channel)
            while True:
                msg = await pubsub.get_sharded_message(timeout=None)
                kind = msg["type"] if msg else None
                if kind == "ssubscribe":
                    confirm(msg["channel"])
                elif kind == "sunsubscribe":
                    # Resharding or a failover moved the slot; redis-py does not
                    # follow it, so start over from a fresh view of the slots.
                    raise SlotMoved(f"the slot of {channel} moved")
                elif kind == "smessage":
                    await dispatch(client, backend, request_channel, msg["channel"], msg["data"])

    await first_to_finish(*(listen_one(channel) for channel in channels))


async def tick(client: Client, backend: QuotesBackend, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await publish(client, backend, backend.on_tick())


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
    client: Client,
    backend: QuotesBackend,
    args: argparse.Namespace,
    stop: asyncio.Event,
    on_subscribed: Callable[[], None],
) -> None:
    """Serve over one client's connections until stopped or Redis fails."""
    subscribe = listen_sharded if isinstance(client, RedisCluster) else listen
    await first_to_finish(
        subscribe(client, backend, args.request_channel, on_subscribed),
        tick(client, backend, args.interval),
        stop.wait(),
    )


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

    backend = QuotesBackend(Market())
    announced = False
    backoff = INITIAL_BACKOFF_SECONDS

    def on_subscribed() -> None:
        nonlocal announced, backoff
        backoff = INITIAL_BACKOFF_SECONDS
        if announced:
            log.info("re-subscribed to %s and %s", args.request_channel, NOTIFY_CHANNEL)
            return
        announced = True
        # A test harness waits for exactly this line on stdout.
        print("quotes_service ready", flush=True)

    while not stop.is_set():
        try:
            # A new client per session: in a cluster, entering it reads afresh
            # which node owns which slot.
            async with connect(args) as client:
                await run_session(client, backend, args, stop, on_subscribed)
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
        "--request-channel",
        default="input",
        help="channel the gateway publishes client events on (default: input)",
    )
    parser.add_argument(
        "--interval",
        type=positive_float,
        default=1.0,
        help="seconds between price ticks pushed to every client (default: 1.0)",
    )
    args = parser.parse_args(argv)
    if args.cluster and not hasattr(RedisCluster, "pubsub"):
        parser.error("--cluster needs redis-py 8 or newer: pip install -r requirements.txt")
    return args


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(main(parse_args()))
