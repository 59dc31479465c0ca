#!/usr/bin/env node
// Example refract backend for the `/quotes` route, in Node.js: the same service as
// ../quotes_service.py, on the `redis` npm client (node-redis).
//
// One process plays both services of the route, `quoteservice` and `chartservice`. They share
// the request channel (`input` by default), so the gateway publishes each client event there
// once and both see it; each answers only the requests it owns.
//
// Client commands (WebSocket text frames):
//
//     ACME          -> quoteservice: {"kind":"quote","symbol":"ACME","price":101.23}
//     chart ACME    -> chartservice: {"kind":"chart","symbol":"ACME","points":[...5 numbers...]}
//     bye           -> quoteservice: reply of type "drop"; the gateway closes with 1000
//     anything else -> quoteservice: {"kind":"error","error":"unknown symbol"}
//
// quoteservice also greets every new client and pushes a price tick to every connected client
// every --interval seconds.
//
// Redis pub/sub is at-most-once: an event published while this service is down or reconnecting
// is lost. The service copes by adopting clients it first hears of through a `message` event,
// and by forgetting clients the gateway reports as `notconnected`.
//
// Run it next to refract (routes.example.toml already routes `/quotes` here):
//
//     npm ci --prefix docs/examples/node
//     node docs/examples/node/quotes_service.mjs --redis-url redis://127.0.0.1:6379
//
// Against a Redis Cluster (refract with `[redis] mode = "cluster"`), name some of its nodes
// instead; the service then uses sharded pub/sub, SSUBSCRIBE and SPUBLISH, as the gateway does
// (a plain SUBSCRIBE would hear nothing):
//
//     node docs/examples/node/quotes_service.mjs \
//         --cluster redis://10.0.0.1:6379,redis://10.0.0.2:6379

import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { createClient, createCluster } from "redis";

const QUOTE_SERVICE = "quoteservice";
const CHART_SERVICE = "chartservice";

// Every reply names this channel as its own `responseChannel`, so the gateway has somewhere to
// say `notconnected` when the client is already gone.
const NOTIFY_CHANNEL = "quotes-example.notify";

const SYMBOLS = ["ACME", "GLOBEX", "INITECH"];
const OPENING_PRICES = { ACME: 100.0, GLOBEX: 50.0, INITECH: 20.0 };
const CHART_POINTS = 5;

// Fixed so that two runs print the same prices, which keeps demos and transcripts comparable.
// (Not the Python example's numbers: the generators differ.)
const PRICE_SEED = 1337;

const INITIAL_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;

const log = logger("quotes_service");

/** A published event that is not valid JSON or not shaped as the protocol says. */
class BadEvent extends Error {}

/** Standard normal numbers from a seeded generator (mulberry32, then Box-Muller). */
function seededGauss(seed) {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** A seeded random walk per symbol, keeping the last few prices for charts. */
class Market {
  constructor(seed = PRICE_SEED) {
    this.gauss = seededGauss(seed);
    this.history = new Map(SYMBOLS.map((symbol) => [symbol, [OPENING_PRICES[symbol]]]));
    // Pre-fill so the very first chart already has CHART_POINTS points.
    for (let i = 1; i < CHART_POINTS; i++) SYMBOLS.forEach((symbol) => this.step(symbol));
    this.nextTick = 0;
  }

  price(symbol) {
    return this.history.get(symbol).at(-1);
  }

  points(symbol) {
    return [...this.history.get(symbol)];
  }

  step(symbol) {
    // Multiplicative steps keep prices positive; the floor guards rounding.
    const moved = this.price(symbol) * (1 + this.gauss() * 0.01);
    const price = Math.max(0.01, Math.round(moved * 100) / 100);
    const history = this.history.get(symbol);
    history.push(price);
    if (history.length > CHART_POINTS) history.shift();
    return price;
  }

  /** Moves the next symbol in turn, so every symbol ticks at a steady rate. */
  tick() {
    const symbol = SYMBOLS[this.nextTick];
    this.nextTick = (this.nextTick + 1) % SYMBOLS.length;
    return [symbol, this.step(symbol)];
  }
}

/**
 * The protocol logic, free of I/O: events in, replies out ({connId, channel, payload}: one
 * PUBLISH each). Keeping Redis out of here means every rule can be exercised by feeding it
 * strings, and a bad event can only ever throw BadEvent.
 */
class QuotesBackend {
  constructor(market) {
    this.market = market;
    // Connection id -> the gateway response channel that reaches that client.
    this.clients = new Map();
  }

  onRequest(raw) {
    const event = decodeObject(raw);
    const connId = requireStr(event, "id");
    const kind = requireStr(event, "type");

    if (kind === "disconnect") {
      this.forget(connId);
      return [];
    }
    if (kind !== "connect" && kind !== "message") {
      // Newer gateways may add event types; ignoring them keeps us compatible.
      log.info(`ignoring event type ${JSON.stringify(kind)} for ${connId}`);
      return [];
    }

    const channel = requireStr(event, "responseChannel");
    if (kind === "connect") {
      this.clients.set(connId, channel);
      const welcome = { kind: "welcome", symbols: SYMBOLS };
      return [reply(connId, channel, QUOTE_SERVICE, welcome)];
    }

    const text = requireStr(event, "message", { allowEmpty: true });
    const binary = event.binary ?? false;
    if (typeof binary !== "boolean") throw new BadEvent("'binary' must be a boolean");
    // A message from a client we never saw connect means we missed its `connect` (we started
    // late, or Redis blipped): adopt it so it gets ticks.
    this.clients.set(connId, channel);
    if (binary) {
      const error = { kind: "error", error: "binary frames are not supported" };
      return [reply(connId, channel, QUOTE_SERVICE, error)];
    }
    return [this.answer(connId, channel, text)];
  }

  answer(connId, channel, text) {
    const words = text.split(/\s+/).filter(Boolean);
    const [first = "", second = ""] = words;
    if (words.length === 1 && first.toLowerCase() === "bye") {
      // The gateway sends `disconnect` after closing; stop ticking right away.
      this.forget(connId);
      return reply(connId, channel, QUOTE_SERVICE, { kind: "bye" }, "drop");
    }
    if (words.length === 1 && SYMBOLS.includes(first.toUpperCase())) {
      const symbol = first.toUpperCase();
      const quote = { kind: "quote", symbol, price: this.market.price(symbol) };
      return reply(connId, channel, QUOTE_SERVICE, quote);
    }
    if (
      words.length === 2 &&
      first.toLowerCase() === "chart" &&
      SYMBOLS.includes(second.toUpperCase())
    ) {
      const symbol = second.toUpperCase();
      const chart = { kind: "chart", symbol, points: this.market.points(symbol) };
      return reply(connId, channel, CHART_SERVICE, chart);
    }
    // Both services see every message; quoteservice alone owns the error reply so the client
    // never gets two.
    return reply(connId, channel, QUOTE_SERVICE, { kind: "error", error: "unknown symbol" });
  }

  onNotify(raw) {
    const event = decodeObject(raw);
    const connId = requireStr(event, "id");
    const kind = requireStr(event, "type");
    if (kind === "notconnected") this.forget(connId);
    else log.info(`ignoring ${JSON.stringify(kind)} notification for ${connId}`);
  }

  onTick() {
    const [symbol, price] = this.market.tick();
    const tick = { kind: "tick", symbol, price };
    return [...this.clients].map(([connId, channel]) =>
      reply(connId, channel, QUOTE_SERVICE, tick),
    );
  }

  forget(connId) {
    if (this.clients.delete(connId)) {
      log.info(`forgot client ${connId} (${this.clients.size} left)`);
    }
  }
}

function decodeObject(raw) {
  let event;
  try {
    event = JSON.parse(raw);
  } catch (err) {
    // SyntaxError, or a RangeError for absurdly deep nesting.
    throw new BadEvent(`invalid JSON: ${err.message}`);
  }
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    throw new BadEvent("event is not a JSON object");
  }
  return event;
}

function requireStr(event, key, { allowEmpty = false } = {}) {
  const value = event[key];
  if (typeof value !== "string") throw new BadEvent(`'${key}' must be a string`);
  if (!value && !allowEmpty) throw new BadEvent(`'${key}' must not be empty`);
  return value;
}

function reply(connId, channel, service, body, type = "message") {
  // The client-facing `message` is itself JSON text: the gateway relays the string verbatim
  // as one WebSocket text frame.
  const payload = {
    id: connId,
    type,
    service,
    message: JSON.stringify(body),
    responseChannel: NOTIFY_CHANNEL,
  };
  return { connId, channel, payload: JSON.stringify(payload) };
}

/**
 * Redis, standalone or cluster, behind the three calls this service needs. node-redis
 * reconnects by itself (with `backoff`) and subscribes again after a reconnect; in a cluster it
 * also follows a channel whose slot moved.
 */
async function connect(args) {
  if (!args.cluster) {
    const client = createClient({ url: args.redisUrl, socket: { reconnectStrategy: backoff } });
    // Subscriptions get a connection of their own (under RESP2 it could do nothing else).
    const subscriber = client.duplicate();
    for (const c of [client, subscriber]) c.on("error", (err) => warnUnavailable(err));
    await Promise.all([client.connect(), subscriber.connect()]);
    return {
      publish: (channel, message) => client.publish(channel, message),
      subscribe: (channels, listener) => subscriber.subscribe(channels, listener),
      destroy: () => [client, subscriber].forEach((c) => c.destroy()),
    };
  }
  // The first seed's credentials, if any, are the cluster's.
  const first = new URL(args.cluster[0]);
  const cluster = createCluster({
    rootNodes: args.cluster.map((url) => ({ url })),
    defaults: {
      username: decodeURIComponent(first.username) || undefined,
      password: decodeURIComponent(first.password) || undefined,
      socket: { reconnectStrategy: backoff },
    },
  }).on("error", (err) => warnUnavailable(err));
  // Unlike a single client, a cluster gives up at once when no seed answers: retry here.
  for (let retries = 0; ; retries++) {
    try {
      await cluster.connect();
      break;
    } catch (err) {
      warnUnavailable(err, backoff(retries));
      await sleep(backoff(retries));
    }
  }
  return {
    // In a cluster the gateway listens with SSUBSCRIBE, which only SPUBLISH reaches.
    publish: (channel, message) => cluster.sPublish(channel, message),
    // Each channel on the node that owns its slot, so one SSUBSCRIBE per channel.
    subscribe: (channels, listener) =>
      Promise.all(channels.map((channel) => cluster.sSubscribe(channel, listener))),
    destroy: () => cluster.destroy(),
  };
}

function backoff(retries) {
  return Math.min(INITIAL_BACKOFF_MS * 2 ** retries, MAX_BACKOFF_MS);
}

function warnUnavailable(err, retryInMs) {
  const retry = retryInMs === undefined ? "retrying" : `retrying in ${retryInMs / 1000}s`;
  log.warn(`redis unavailable (${err.message || err}); ${retry}`);
}

async function publish(redis, backend, outgoing) {
  // All in one tick, so node-redis pipelines them: one round trip however many clients a tick
  // goes to (in a cluster, one per node).
  const results = await Promise.allSettled(
    outgoing.map((item) => redis.publish(item.channel, item.payload)),
  );
  results.forEach((result, i) => {
    // Nobody subscribed to a response channel means that gateway node is gone, and with it
    // the client: no `notconnected` will ever come.
    if (result.status === "fulfilled" && result.value === 0) backend.forget(outgoing[i].connId);
  });
  const failed = results.find((result) => result.status === "rejected");
  if (failed) log.warn(`could not publish: ${failed.reason.message}`);
}

async function dispatch(redis, backend, requestChannel, channel, data) {
  try {
    if (channel === requestChannel) await publish(redis, backend, backend.onRequest(data));
    else backend.onNotify(data);
  } catch (err) {
    if (!(err instanceof BadEvent)) throw err;
    const excerpt = JSON.stringify(data.slice(0, 200));
    log.warn(`dropping bad event on ${channel}: ${err.message}: ${excerpt}`);
  }
}

async function main(args) {
  const backend = new QuotesBackend(new Market());
  let redis;
  let ticker;
  const stop = () => {
    clearInterval(ticker);
    // Nothing in flight is worth waiting for: pub/sub is at-most-once anyway.
    redis?.destroy();
    log.info("stopped");
    process.exit(0);
  };
  process.once("SIGTERM", stop).once("SIGINT", stop);

  redis = await connect(args);
  // Ready only once Redis confirms the subscriptions: a PUBLISH before that is lost.
  await redis.subscribe([args.requestChannel, NOTIFY_CHANNEL], (data, channel) =>
    dispatch(redis, backend, args.requestChannel, channel, data),
  );
  ticker = setInterval(() => publish(redis, backend, backend.onTick()), args.interval * 1000);
  // A test harness waits for exactly this line on stdout.
  console.log("quotes_service ready");
}

function logger(name) {
  const at = (level) => (message) =>
    console.error(`${new Date().toISOString()} ${level} ${name}: ${message}`);
  return { info: at("INFO"), warn: at("WARNING") };
}

const USAGE = `usage: quotes_service.mjs [--redis-url URL | --cluster URL,URL,...]
                         [--request-channel NAME] [--interval SECONDS]

  --redis-url URL         Redis to use (default: $REDIS_URL or redis://127.0.0.1:6379)
  --cluster URL,URL,...   a Redis Cluster instead, from these seed nodes: sharded pub/sub
                          (SSUBSCRIBE, SPUBLISH), as refract's mode = "cluster" expects
  --request-channel NAME  channel the gateway publishes client events on (default: input)
  --interval SECONDS      seconds between price ticks pushed to every client (default: 1.0)`;

/** The command line, checked; exits 2 with the usage on a bad one, as argparse does. */
function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      "redis-url": { type: "string", default: process.env.REDIS_URL || "redis://127.0.0.1:6379" },
      cluster: { type: "string" },
      "request-channel": { type: "string", default: "input" },
      interval: { type: "string", default: "1.0" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  return {
    redisUrl: values["redis-url"],
    cluster: values.cluster === undefined ? undefined : seedUrls(values.cluster),
    requestChannel: values["request-channel"],
    interval: positiveSeconds(values.interval),
  };
}

function positiveSeconds(text) {
  const value = Number(text);
  if (!(value > 0 && value < Infinity)) {
    const what = JSON.stringify(text);
    throw new Error(`--interval: must be a positive number of seconds, not ${what}`);
  }
  return value;
}

function seedUrls(text) {
  const urls = text.split(",").map((url) => url.trim()).filter(Boolean);
  for (const url of urls) {
    if (!URL.canParse(url) || new URL(url).protocol !== "redis:" || !new URL(url).hostname) {
      throw new Error(`--cluster: not a redis://host:port URL: ${JSON.stringify(url)}`);
    }
  }
  if (!urls.length) throw new Error("--cluster: needs at least one redis://host:port URL");
  return urls;
}

let args;
try {
  args = parseCommandLine(process.argv.slice(2));
} catch (err) {
  console.error(`${USAGE}\nquotes_service.mjs: error: ${err.message}`);
  process.exit(2);
}
await main(args);
