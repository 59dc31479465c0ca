// Shared helpers for the suite: the environment the Rust wrapper (tests/channels_js.rs) passes,
// HS256 tokens minted with Node's crypto, phoenix.js sockets on the `ws` transport, Redis
// clients, and promises with deadlines. Nothing here sleeps and hopes: every wait is on an event
// with a deadline that names what was awaited.

import { createHmac, randomUUID } from "node:crypto";
import { Serializer, Socket } from "phoenix";
import { WebSocket } from "ws";
import { createClient } from "@redis/client";

function env(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: run the suite with \`cargo test --test channels_js\` (see tests/js/README.md)`);
  }
  return v;
}

/** ws://127.0.0.1:PORT/socket: what an app passes to `new Socket(...)`. */
export const REFRACT_URL = env("REFRACT_URL");
/** http://127.0.0.1:PORT */
export const REFRACT_HTTP = env("REFRACT_HTTP");
export const REDIS_URL = env("REDIS_URL");
export const JWT_SECRET = env("JWT_SECRET");
/** The gateway's `channels.idle_timeout`, in ms. */
export const IDLE_MS = Number(process.env.REFRACT_IDLE_MS || 2000);
/** The gateway's `channels.max_topics_per_socket`. */
export const MAX_TOPICS = Number(process.env.REFRACT_MAX_TOPICS || 100);
/** Redis channel on which the wrapper listens for restart requests. */
export const CONTROL = process.env.REFRACT_CONTROL || "refract:js:control";

/** How long a reply that should come "at once" may take. */
export const PROMPT_MS = 2000;
/** How long anything that goes through Redis may take. */
export const WAIT_MS = 5000;

export const uid = () => randomUUID().slice(0, 8);

const b64url = (data) => Buffer.from(data).toString("base64url");

/** An HS256 JWT over `claims`; `exp` one hour ahead unless given. */
export function mint(claims, secret = JWT_SECRET) {
  const now = Math.floor(Date.now() / 1000);
  const body = { exp: now + 3600, ...claims };
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = b64url(JSON.stringify(body));
  const sig = createHmac("sha256", secret).update(`${head}.${payload}`).digest("base64url");
  return `${head}.${payload}.${sig}`;
}

/** A promise with its resolve and reject. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * `promise`, or a rejection naming `what` (a string, or a function called at the timeout) after
 * `ms`. `frames` (a FrameLog) is quoted on timeout.
 */
export async function within(promise, ms, what, frames) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const seen = frames ? `\n  last frames received (heartbeat replies left out):\n${frames.describe()}` : "";
      const name = typeof what === "function" ? what() : what;
      reject(new Error(`timed out after ${ms} ms waiting for: ${name}${seen}`));
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits `ms` on purpose (for tests about time passing, never to let something happen). */
export const hold = (ms) => new Promise((r) => setTimeout(r, ms));

/** A queue of values with deadlined `next`. */
export class Queue {
  constructor() {
    this.items = [];
    this.waiters = [];
  }
  push(v) {
    const w = this.waiters.shift();
    if (w) w(v);
    else this.items.push(v);
  }
  next(ms, what, frames) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    const d = deferred();
    this.waiters.push(d.resolve);
    return within(d.promise, ms, what, frames).finally(() => {
      const i = this.waiters.indexOf(d.resolve);
      if (i >= 0) this.waiters.splice(i, 1);
    });
  }
  get length() {
    return this.items.length;
  }
}

/**
 * Every frame a socket received, decoded on its own (phoenix.js's Presence mutates the payloads
 * it is handed, so the log keeps a copy decoded before phoenix.js sees the frame).
 */
export class FrameLog {
  constructor() {
    this.frames = [];
    this.waiters = [];
  }
  /** A `decode` option for `new Socket`: phoenix.js's own decoder, recording a copy first. */
  decoder() {
    return (raw, callback) => {
      const copy = raw instanceof ArrayBuffer ? raw.slice(0) : raw;
      Serializer.decode(copy, (msg) => this.record({ at: Date.now(), ...msg }));
      return Serializer.decode(raw, callback);
    };
  }
  record(frame) {
    this.frames.push(frame);
    this.waiters = this.waiters.filter((w) => !(w.pred(frame) && (w.resolve(frame), true)));
  }
  /** The first frame received that matches `pred`, waiting up to `ms` for it. */
  first(pred, ms, what) {
    const found = this.frames.find(pred);
    if (found) return Promise.resolve(found);
    const d = deferred();
    this.waiters.push({ pred, resolve: d.resolve });
    return within(d.promise, ms, what, this);
  }
  describe(n = 12) {
    return this.frames
      .filter((f) => f.topic !== "phoenix")
      .slice(-n)
      .map(({ join_ref, ref, topic, event, payload }) => {
        const p = payload instanceof ArrayBuffer ? `<${payload.byteLength} binary bytes>` : JSON.stringify(payload);
        return `    [${JSON.stringify(join_ref)}, ${JSON.stringify(ref)}, ${JSON.stringify(topic)}, ${JSON.stringify(event)}, ${p}]`;
      })
      .join("\n");
  }
  where(pred) {
    return this.frames.filter(pred);
  }
}

/**
 * A phoenix.js Socket on refract, as an app would build one, plus:
 * - `transport`: Node 20 has no global WebSocket (it is behind --experimental-websocket), and
 *   phoenix.js would then fall back to LongPoll, which refract does not serve;
 * - `heartbeatIntervalMs` a quarter of the gateway's idle_timeout unless given: the test config
 *   shrinks idle_timeout from 60 s to 2 s, so the 30 s default would get every socket closed;
 * - `decode`: phoenix.js's own decoder, logging each frame (see FrameLog).
 * Disconnected when the test ends.
 */
export function newSocket(t, opts = {}) {
  const frames = new FrameLog();
  const socket = new Socket(REFRACT_URL, {
    transport: WebSocket,
    heartbeatIntervalMs: IDLE_MS / 4,
    decode: frames.decoder(),
    ...opts,
  });
  socket.frames = frames;
  socket.opens = 0;
  socket.closes = [];
  socket.errors = 0;
  socket.onOpen(() => socket.opens++);
  socket.onClose((e) => socket.closes.push({ code: e && e.code, reason: e && e.reason }));
  socket.onError(() => socket.errors++);
  t.after(() => new Promise((resolve) => socket.disconnect(resolve)));
  return socket;
}

/** Resolves on the socket's next open (or now if open), rejects on a transport error first. */
export function opened(socket, ms = WAIT_MS) {
  if (socket.isConnected()) return Promise.resolve();
  const d = deferred();
  const refs = [socket.onOpen(() => d.resolve()), socket.onError((e) => d.reject(new Error(`socket error before open: ${e && e.message ? e.message : e}`)))];
  return within(d.promise, ms, "the socket to open").finally(() => socket.off(refs));
}

/** A connected socket. */
export async function connect(t, opts = {}) {
  const socket = newSocket(t, opts);
  socket.connect();
  await opened(socket);
  return socket;
}

/**
 * Joins and resolves with the outcome `{status, response}` of the first reply ("ok", "error")
 * or the client's own "timeout"; rejects if none comes within `ms`.
 */
export function joinOutcome(channel, ms = PROMPT_MS) {
  const d = deferred();
  channel
    .join()
    .receive("ok", (response) => d.resolve({ status: "ok", response }))
    .receive("error", (response) => d.resolve({ status: "error", response }))
    .receive("timeout", () => d.resolve({ status: "timeout", response: null }));
  return within(d.promise, ms, `a reply to phx_join on ${JSON.stringify(channel.topic)}`, channel.socket.frames);
}

/** Joins and returns the ok response; fails on anything else. */
export async function joinOk(channel, ms = PROMPT_MS) {
  const { status, response } = await joinOutcome(channel, ms);
  if (status !== "ok") {
    throw new Error(`join of ${JSON.stringify(channel.topic)} answered ${status}: ${JSON.stringify(response)}`);
  }
  return response;
}

/** Resolves with the push's reply status and response, like joinOutcome. */
export function pushOutcome(push, ms, what, frames) {
  const d = deferred();
  push
    .receive("ok", (response) => d.resolve({ status: "ok", response }))
    .receive("error", (response) => d.resolve({ status: "error", response }))
    .receive("timeout", () => d.resolve({ status: "timeout", response: null }));
  return within(d.promise, ms, what, frames);
}

/** Every payload of `event` on `channel`, as a Queue. */
export function events(channel, event) {
  const q = new Queue();
  channel.on(event, (payload) => q.push(payload));
  return q;
}

/** A Redis client, closed when the test ends. */
export async function redis(t) {
  const client = createClient({ url: REDIS_URL });
  client.on("error", () => {});
  await client.connect();
  t.after(() => client.destroy());
  return client;
}

/** A pattern subscription whose messages (`{channel, message}`, both Buffers) queue up. */
export async function psubscribe(t, pattern) {
  const client = await redis(t);
  const q = new Queue();
  await client.pSubscribe(pattern, (message, channel) => q.push({ channel: channel.toString(), message }), true);
  return q;
}

/** Publishes on Redis and returns the receiver count. */
export async function publish(client, channel, message) {
  return client.publish(channel, message);
}
