#!/usr/bin/env node
// Example backend for refract's Channels endpoint (docs/channels.md), in Node.js: the same
// backend as ../channels_backend.py, on the `redis` npm client (node-redis).
//
// Browsers join Phoenix topics through the gateway; this process talks only to Redis:
//
//     browser  channel.push("say", {"text": "hi"}) on room:lobby
//       -> gateway PUBLISH from:room:lobby:say {"text": "hi"}
//       -> this backend PUBLISH to:room:lobby:said
//          {"text":"hi","at":"2025-01-01T12:00:00.000+00:00"}
//       -> gateway pushes event "said" to every socket joined to room:lobby
//
// It also publishes to:room:lobby:tick {"n": 1}, {"n": 2}, ... every --interval seconds.
//
// Topics contain ':' and events do not, so a Redis channel name is split at its LAST ':'.
// Pub/sub is at-most-once: what is published while this backend is down or reconnecting is
// lost. docs/examples/channels.html is a page to try it with.
//
//     npm ci --prefix docs/examples/node
//     node docs/examples/node/channels_backend.mjs --redis-url redis://127.0.0.1:6379
//
// Against a Redis Cluster (refract with `[redis] mode = "cluster"`), name some of its nodes
// instead. The names change there: a topic has one sharded channel `to:{room:lobby}` whose
// messages are `<event>:<payload>`, and pushes come on `from:{room:lobby}:say`. Sharded pub/sub
// has no patterns, so the topics to serve are named (--topics, default room:lobby):
//
//     node docs/examples/node/channels_backend.mjs \
//         --cluster redis://10.0.0.1:6379,redis://10.0.0.2:6379

import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { createClient, createCluster } from "redis";

const PATTERN = "from:room:*";
const TICK_TOPIC = "room:lobby";

const INITIAL_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;

const log = logger("channels_backend");

/** A client push that is not shaped as this backend expects. */
class BadMessage extends Error {}

/** `from:room:lobby:say` -> [`room:lobby`, `say`]; in a cluster, `from:{room:lobby}:say`. */
function splitChannel(channel) {
  const rest = channel.startsWith("from:") ? channel.slice("from:".length) : "";
  const cut = rest.lastIndexOf(":");
  let topic = rest.slice(0, Math.max(cut, 0));
  const event = cut < 0 ? "" : rest.slice(cut + 1);
  if (topic.startsWith("{") && topic.endsWith("}")) {
    // The cluster's hash tag, which keeps a topic's channels in one slot.
    topic = topic.slice(1, -1);
  }
  if (!topic || !event) throw new BadMessage(`not a from:<topic>:<event> channel: ${channel}`);
  return [topic, event];
}

/** The sharded channel a cluster's gateway publishes `event` pushes of `topic` on. */
function pushesOf(topic, event) {
  return `from:{${topic}}:${event}`;
}

/** The [channel, message] that has the gateway push `event` to every socket on `topic`. */
function toTopic(topic, event, payload, cluster) {
  // No patterns in sharded pub/sub: one channel per topic, the event inside the message.
  return cluster ? [`to:{${topic}}`, `${event}:${payload}`] : [`to:${topic}:${event}`, payload];
}

/** One client push in, at most one [channel, message] to publish out. Pure: no I/O. */
function onPush(channel, data, cluster = false) {
  const [topic, event] = splitChannel(channel);
  if (event !== "say") {
    log.info(`ignoring event ${JSON.stringify(event)} on ${topic}`);
    return null;
  }
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    throw new BadMessage("payload is not JSON");
  }
  if (typeof payload?.text !== "string") {
    throw new BadMessage('payload is not {"text": string}');
  }
  // The same timestamp as the Python example's: RFC 3339, milliseconds, UTC as +00:00.
  const at = new Date().toISOString().replace(/Z$/, "+00:00");
  return toTopic(topic, "said", JSON.stringify({ text: payload.text, at }), cluster);
}

async function handle(redis, channel, data) {
  let out;
  try {
    out = onPush(channel, data, redis.cluster);
  } catch (err) {
    if (!(err instanceof BadMessage)) throw err;
    const excerpt = JSON.stringify(data.slice(0, 200));
    log.warn(`dropping bad message on ${channel}: ${err.message}: ${excerpt}`);
    return;
  }
  if (out) await redis.publish(...out);
}

/**
 * Redis, standalone or cluster, behind the calls this backend needs. node-redis reconnects by
 * itself (with `backoff`) and subscribes again after a reconnect; in a cluster it also follows
 * a channel whose slot moved.
 */
async function connect(args) {
  if (!args.cluster) {
    const client = createClient({ url: args.redisUrl, socket: { reconnectStrategy: backoff } });
    // Subscriptions get a connection of their own (under RESP2 it could do nothing else).
    const subscriber = client.duplicate();
    for (const c of [client, subscriber]) c.on("error", (err) => warnUnavailable(err));
    await Promise.all([client.connect(), subscriber.connect()]);
    return {
      cluster: false,
      publish: (channel, message) => client.publish(channel, message),
      listen: (listener) => subscriber.pSubscribe(PATTERN, listener),
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
    cluster: true,
    // In a cluster the gateway listens with SSUBSCRIBE, which only SPUBLISH reaches.
    publish: (channel, message) => cluster.sPublish(channel, message),
    // Each topic's `say` pushes, each channel on the node that owns its slot.
    listen: (listener) =>
      Promise.all(
        args.topics.map((topic) => cluster.sSubscribe(pushesOf(topic, "say"), listener)),
      ),
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

async function main(args) {
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
  // Ready only once Redis confirms: a push published before that is lost.
  await redis.listen((data, channel) => handle(redis, channel, data));
  let n = 0;
  ticker = setInterval(() => {
    n += 1;
    const [channel, message] = toTopic(TICK_TOPIC, "tick", JSON.stringify({ n }), redis.cluster);
    redis.publish(channel, message).catch((err) => log.warn(`could not publish: ${err.message}`));
  }, args.interval * 1000);
  // A test harness waits for this line.
  console.log("channels_backend ready");
}

function logger(name) {
  const at = (level) => (message) =>
    console.error(`${new Date().toISOString()} ${level} ${name}: ${message}`);
  return { info: at("INFO"), warn: at("WARNING") };
}

const USAGE = `usage: channels_backend.mjs [--redis-url URL]
                           [--cluster URL,URL,... [--topics TOPIC,...]]
                           [--interval SECONDS]

  --redis-url URL        Redis to use (default: $REDIS_URL or redis://127.0.0.1:6379)
  --cluster URL,URL,...  a Redis Cluster instead, from these seed nodes: sharded pub/sub
                         (SSUBSCRIBE, SPUBLISH), as refract's mode = "cluster" expects
  --topics TOPIC,...     with --cluster: the topics to serve (default: ${TICK_TOPIC})
  --interval SECONDS     seconds between ticks on ${TICK_TOPIC} (default: 5)`;

/** The command line, checked; exits 2 with the usage on a bad one, as argparse does. */
function parseCommandLine(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      "redis-url": { type: "string", default: process.env.REDIS_URL || "redis://127.0.0.1:6379" },
      cluster: { type: "string" },
      topics: { type: "string" },
      interval: { type: "string", default: "5" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (values.topics !== undefined && values.cluster === undefined) {
    throw new Error("--topics needs --cluster (standalone, every room:* topic is served)");
  }
  return {
    redisUrl: values["redis-url"],
    cluster: values.cluster === undefined ? undefined : seedUrls(values.cluster),
    topics: values.topics === undefined ? [TICK_TOPIC] : topicList(values.topics),
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

function topicList(text) {
  const topics = text.split(",").map((topic) => topic.trim()).filter(Boolean);
  if (!topics.length) throw new Error("--topics: needs at least one topic");
  return topics;
}

let args;
try {
  args = parseCommandLine(process.argv.slice(2));
} catch (err) {
  console.error(`${USAGE}\nchannels_backend.mjs: error: ${err.message}`);
  process.exit(2);
}
await main(args);
