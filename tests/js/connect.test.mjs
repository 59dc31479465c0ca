// Connecting and joining the way apps do it with phoenix.js: socket params, POST /token,
// phoenix 1.8's authToken; and what the endpoint refuses before the upgrade.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "phoenix";
import { WebSocket } from "ws";
import {
  REFRACT_HTTP,
  REFRACT_URL,
  PROMPT_MS,
  WAIT_MS,
  connect,
  deferred,
  joinOk,
  mint,
  newSocket,
  uid,
  within,
} from "./harness.mjs";

/** The join response id is `<conn>:<topic>:<join_ref>` (Tangram's shape). */
function assertJoinId(response, channel) {
  assert.equal(typeof response.id, "string", `join response ${JSON.stringify(response)} has a string id`);
  const suffix = `:${channel.topic}:${channel.joinRef()}`;
  assert.ok(response.id.endsWith(suffix), `id ${JSON.stringify(response.id)} ends with ${JSON.stringify(suffix)}`);
  assert.ok(response.id.length > suffix.length, `id ${JSON.stringify(response.id)} starts with a connection id`);
  return response.id.slice(0, -suffix.length);
}

test("socket params token: connect, join on the socket credential, ok carries <conn>:<topic>:<join_ref>", { timeout: 20000 }, async (t) => {
  const topic = `room:${uid()}`;
  const socket = await connect(t, { params: { token: mint({ id: "alice", channel: topic }) } });
  // The join payload has no token: the socket credential covers the topic.
  const channel = socket.channel(topic);
  const response = await joinOk(channel);
  const conn = assertJoinId(response, channel);

  // A second topic on the same socket reports the same connection id.
  const other = `room:${uid()}`;
  const socket2 = await connect(t, { params: { token: mint({ id: "alice", channels: [topic, other] }) } });
  const a = socket2.channel(topic);
  const b = socket2.channel(other);
  const [ra, rb] = await Promise.all([joinOk(a), joinOk(b)]);
  assert.equal(assertJoinId(ra, a), assertJoinId(rb, b), "one socket, one connection id");
  assert.notEqual(assertJoinId(ra, a), conn, "two sockets, two connection ids");
});

test("token from POST /token, passed in the join payload", { timeout: 20000 }, async (t) => {
  const topic = `room:${uid()}`;
  const res = await fetch(`${REFRACT_HTTP}/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel: topic, id: "bob" }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  assert.equal(res.status, 200, "POST /token answers 200");
  const body = await res.json();
  assert.equal(body.id, "bob");
  assert.equal(body.channel, topic);
  assert.equal(typeof body.token, "string");

  const socket = await connect(t);
  const channel = socket.channel(topic, { token: body.token });
  assertJoinId(await joinOk(channel), channel);

  // Without an id the endpoint makes one up.
  const anon = await fetch(`${REFRACT_HTTP}/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel: topic }),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  assert.equal(anon.status, 200);
  const anonBody = await anon.json();
  assert.ok(typeof anonBody.id === "string" && anonBody.id.length > 0, `a generated id in ${JSON.stringify(anonBody)}`);
  const c2 = socket.channel(topic, { token: anonBody.token });
  // Same topic again on this socket: phoenix.js leaves the first channel itself, then joins.
  assertJoinId(await joinOk(c2), c2);
});

test("phoenix 1.8 authToken: the token rides in Sec-WebSocket-Protocol and the server answers `phoenix`", { timeout: 20000 }, async (t) => {
  const topic = `room:${uid()}`;
  const socket = await connect(t, { authToken: mint({ id: "carol", channel: topic }) });
  assert.equal(socket.conn.protocol, "phoenix", "the gateway selected the `phoenix` subprotocol");
  const channel = socket.channel(topic);
  assertJoinId(await joinOk(channel), channel);
});

/** The HTTP status of a WebSocket upgrade to `url` that the server refuses. */
function upgradeStatus(url, protocols) {
  const d = deferred();
  const ws = new WebSocket(url, protocols);
  ws.on("unexpected-response", (_req, res) => {
    d.resolve(res.statusCode);
    ws.terminate();
  });
  ws.on("open", () => {
    d.resolve("upgraded");
    ws.terminate();
  });
  ws.on("error", () => {});
  return within(d.promise, WAIT_MS, `an answer to the upgrade of ${url}`);
}

test("refused before the upgrade: bad socket token 403, vsn 1.x 400, longpoll 404", { timeout: 20000 }, async (t) => {
  const ws = `${REFRACT_URL}/websocket`;
  assert.equal(await upgradeStatus(`${ws}?vsn=2.0.0&token=not-a-jwt`), 403, "a bad socket token is 403");
  assert.equal(await upgradeStatus(`${ws}?vsn=2.0.0&token=${mint({ id: "x", channel: "a" }, "another-secret-entirely!")}`), 403, "a token signed with another secret is 403");
  assert.equal(await upgradeStatus(`${ws}?vsn=1.0.0`), 400, "vsn 1.0.0 is 400");
  assert.equal(await upgradeStatus(ws), 400, "no vsn is 400");
  assert.equal(await upgradeStatus(`${ws}?vsn=2.0.0`), "upgraded", "no credential at all is fine at the socket level");

  const longpoll = await fetch(`${REFRACT_HTTP}/socket/longpoll?vsn=2.0.0`, { signal: AbortSignal.timeout(WAIT_MS) });
  assert.equal(longpoll.status, 404, "longpoll is not served");

  // What phoenix.js makes of the 403: an error, never an open socket.
  const socket = newSocket(t, { params: { token: "not-a-jwt" } });
  const errored = deferred();
  socket.onError(() => errored.resolve());
  socket.connect();
  await within(errored.promise, PROMPT_MS, "phoenix.js to report the refused upgrade as an error");
  assert.equal(socket.opens, 0, "the socket never opened");
});

test("phoenix.js defaults: the URL it builds is <endpoint>/websocket?vsn=2.0.0", () => {
  const s = new Socket(REFRACT_URL, { transport: WebSocket, params: { token: "t" } });
  assert.equal(s.endPointURL(), `${REFRACT_URL}/websocket?token=t&vsn=2.0.0`);
});
