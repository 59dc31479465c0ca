// phoenix.js heartbeats keep a quiet socket alive past the gateway's idle_timeout, and a socket
// that sends nothing at all is closed with 1001, after which phoenix.js reconnects and rejoins.

import { test } from "node:test";
import assert from "node:assert/strict";
import { IDLE_MS, WAIT_MS, connect, deferred, events, hold, joinOk, mint, publish, redis, uid, within } from "./harness.mjs";

test("heartbeats every 500 ms keep a quiet socket joined for more than 3x idle_timeout", { timeout: 30000 }, async (t) => {
  const topic = `quiet:${uid()}`;
  const r = await redis(t);
  const socket = await connect(t, { heartbeatIntervalMs: 500 });
  const channel = socket.channel(topic, { token: mint({ id: "quiet", channel: topic }) });
  const evt = events(channel, "evt");
  const channelErrors = [];
  channel.onError((reason) => channelErrors.push(reason));
  await joinOk(channel);
  const joinRef = channel.joinRef();

  // The test is about time passing: nothing but heartbeats for 3.5 idle timeouts.
  await hold(IDLE_MS * 3.5);

  assert.deepEqual(socket.closes, [], "the socket was never closed");
  assert.equal(socket.opens, 1, "never reconnected");
  assert.deepEqual(channelErrors, [], "the channel never errored");
  assert.equal(channel.joinRef(), joinRef, "never rejoined");
  const acks = socket.frames.where((f) => f.topic === "phoenix" && f.event === "phx_reply");
  assert.ok(acks.length >= 5, `heartbeats were answered (${acks.length} replies)`);
  for (const a of acks) assert.deepEqual(a.payload, { status: "ok", response: {} }, "a heartbeat reply is ok with {}");

  await publish(r, `to:${topic}:evt`, '{"still":"here"}');
  assert.deepEqual(await evt.next(WAIT_MS, "a publish after the quiet time", socket.frames), { still: "here" });
});

test("a socket that sends nothing is closed with 1001 at idle_timeout; phoenix.js reconnects and rejoins", { timeout: 30000 }, async (t) => {
  const topic = `silent:${uid()}`;
  // Heartbeats far apart: after the join, the client says nothing.
  const socket = await connect(t, { heartbeatIntervalMs: 60000 });
  const channel = socket.channel(topic, { token: mint({ id: "silent", channel: topic }) });
  const oks = [];
  const rejoined = deferred();
  const closed = deferred();
  socket.onClose((e) => closed.resolve(e));
  channel
    .join()
    .receive("ok", (r) => {
      oks.push(r);
      if (oks.length === 2) rejoined.resolve();
    });
  const joinedAt = Date.now();

  const e = await within(closed.promise, IDLE_MS + 3000, "the idle close", socket.frames);
  const after = Date.now() - joinedAt;
  assert.equal(e.code, 1001, `closed with 1001 (going away), not ${e.code} ${JSON.stringify(e.reason)}`);
  assert.ok(after >= IDLE_MS - 250, `not before idle_timeout (${after} ms)`);

  await within(rejoined.promise, WAIT_MS * 2, "phoenix.js to reconnect and rejoin", socket.frames);
  assert.equal(socket.opens, 2);
  assert.notEqual(oks[1].id, oks[0].id, "a new connection");
});
