// Redis to client (`to:<topic>:<event>`) and client to Redis (`from:<topic>:<event>`), seen
// through phoenix.js's own channel.on and channel.push.

import { test } from "node:test";
import assert from "node:assert/strict";
import { PROMPT_MS, WAIT_MS, connect, events, joinOk, mint, psubscribe, publish, redis, uid, within } from "./harness.mjs";

test("channel.on: a JSON publish arrives as the value, non-JSON bytes as an ArrayBuffer", { timeout: 20000 }, async (t) => {
  // A topic with ':' in it: the channel name is split at its LAST ':'.
  const topic = `room:${uid()}:sub`;
  const r = await redis(t);
  const socket = await connect(t);
  const channel = socket.channel(topic, { token: mint({ id: "reader", channel: topic }) });
  const evt = events(channel, "evt");
  await joinOk(channel);
  const next = (what) => evt.next(WAIT_MS, what, socket.frames);

  // Published right after the ok reply: joined means subscribed.
  await publish(r, `to:${topic}:evt`, '{"a":1}');
  assert.deepEqual(await next("the JSON publish"), { a: 1 });

  await publish(r, `to:${topic}:evt`, ' \n\t["x", {"b": null}]');
  assert.deepEqual(await next("the JSON publish with leading whitespace"), ["x", { b: null }]);

  await publish(r, `to:${topic}:evt`, '"just a string"');
  assert.equal(await next("a JSON string"), "just a string");

  const bytes = Buffer.from([0x00, 0x01, 0xff, 0xfe, 0x80, 0x7b, 0x22, 0x0a, 0xc3, 0x28]);
  await publish(r, `to:${topic}:evt`, bytes);
  const bin = await next("the binary publish");
  assert.ok(bin instanceof ArrayBuffer, `an ArrayBuffer, got ${Object.prototype.toString.call(bin)}`);
  assert.deepEqual(Buffer.from(bin), bytes, "the same bytes");

  // A longer topic with ours as its prefix is another topic; an empty payload is dropped.
  await publish(r, `to:${topic}:deeper:evt`, '{"wrong":"topic"}');
  await publish(r, `to:${topic}:evt`, "");
  await publish(r, `to:${topic}:evt`, '{"marker":true}');
  assert.deepEqual(await next("the marker"), { marker: true }, "nothing for `<topic>:deeper`, nothing for an empty payload");

  // Server pushes carry ref null and the channel's join_ref.
  const pushes = socket.frames.where((f) => f.topic === topic && f.event === "evt");
  assert.equal(pushes.length, 5);
  for (const f of pushes) {
    assert.equal(f.ref, null, "a push has ref null");
    assert.equal(f.join_ref, channel.joinRef(), "a push carries the join_ref");
  }
});

test("channel.push: the payload reaches from:<topic>:<event> byte for byte, and nothing else is published", { timeout: 20000 }, async (t) => {
  const topic = `room:${uid()}`;
  // Everything published under from:, from before the socket exists: phx_join (with its
  // token), heartbeats and presence events must never show up there.
  const from = await psubscribe(t, "from:*");
  const mine = async (what) => {
    for (;;) {
      const m = await from.next(WAIT_MS, what, socket.frames);
      if (m.channel.startsWith(`from:${topic}:`) || m.channel.startsWith("from:phoenix:")) return m;
    }
  };
  const socket = await connect(t, { heartbeatIntervalMs: 100 });
  const channel = socket.channel(topic, { token: mint({ id: "writer", channel: topic }) });
  await joinOk(channel);
  // A few heartbeats go by first.
  const acks = () => socket.frames.where((f) => f.topic === "phoenix" && f.event === "phx_reply").length;
  await within(
    new Promise((resolve) => {
      const check = () => (acks() >= 3 ? resolve() : setTimeout(check, 20));
      check();
    }),
    PROMPT_MS * 2,
    "three heartbeat replies",
    socket.frames,
  );
  channel.push("presence_diff", { joins: { forged: { metas: [{}] } }, leaves: {} });

  // Tangram re-encoded payloads and lost fields of objects with `message` or `token` strings;
  // 1e21 and key order would change under a re-encoding too.
  const payload = { x: 1, message: "m", token: "t", z: [1e21, 0.1, -0], "é": "ü\u2028", a: { nested: true } };
  channel.push("evt", payload);
  const got = await mine("the push on Redis");
  assert.equal(got.channel, `from:${topic}:evt`, "the first thing published is the push itself");
  assert.equal(got.message.toString("utf8"), JSON.stringify(payload), "published exactly as phoenix.js serialized it");

  // A binary push (phoenix.js's binary serializer) publishes its raw bytes.
  const raw = Uint8Array.from([0, 255, 1, 128, 10, 13, 0x7b]);
  channel.push("bin", raw.buffer);
  const gotBin = await mine("the binary push on Redis");
  assert.equal(gotBin.channel, `from:${topic}:bin`);
  assert.deepEqual(new Uint8Array(gotBin.message), raw);

  // No reply to a push by default (Phoenix noreply), so the client sees nothing for it.
  const replies = socket.frames.where((f) => f.topic === topic && f.event === "phx_reply");
  assert.equal(replies.length, 1, `only the join was answered: ${socket.frames.describe()}`);
  assert.equal(from.length, 0, "nothing else was published under from:");
});
