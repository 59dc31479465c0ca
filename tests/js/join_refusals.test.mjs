// A refused join always gets an error reply with one of the contract's reasons, promptly (the
// client's own timeout is 10 s), and leaving after it leaves the socket healthy.

import { test } from "node:test";
import assert from "node:assert/strict";
import { MAX_TOPICS, PROMPT_MS, connect, joinOk, joinOutcome, mint, pushOutcome, uid } from "./harness.mjs";

/** Joins `topic` with `params` and expects an error reply with `reason` within PROMPT_MS. */
async function expectRefusal(socket, topic, params, reason) {
  const channel = socket.channel(topic, params);
  const started = Date.now();
  const { status, response } = await joinOutcome(channel, PROMPT_MS);
  assert.equal(status, "error", `join of ${JSON.stringify(topic)} is refused, got ${status} ${JSON.stringify(response)}`);
  assert.deepEqual(response, { reason }, `join of ${JSON.stringify(topic)} is refused with reason ${JSON.stringify(reason)}`);
  assert.ok(Date.now() - started < PROMPT_MS);
  // phoenix.js would retry the join in 1 s; an app gives up with leave(), which sends phx_leave
  // for a topic the server never joined (Tangram's handler crashed on exactly this).
  channel.leave();
  return channel;
}

/** The socket still works: a fresh topic joins. */
async function assertHealthy(socket) {
  const topic = `healthy:${uid()}`;
  const channel = socket.channel(topic, { token: mint({ id: "h", channel: topic }) });
  await joinOk(channel);
}

test("unauthorized: missing, garbage, wrongly signed and expired tokens", { timeout: 20000 }, async (t) => {
  const socket = await connect(t);
  const topic = `room:${uid()}`;
  await expectRefusal(socket, topic, {}, "unauthorized");
  await expectRefusal(socket, topic, { token: "not-a-jwt" }, "unauthorized");
  await expectRefusal(socket, topic, { token: mint({ id: "m", channel: topic }, "another-secret-entirely!") }, "unauthorized");
  const longAgo = Math.floor(Date.now() / 1000) - 600;
  await expectRefusal(socket, topic, { token: mint({ id: "m", channel: topic, exp: longAgo }) }, "unauthorized");
  await assertHealthy(socket);
});

test("forbidden: a valid token for another topic", { timeout: 20000 }, async (t) => {
  const socket = await connect(t);
  const mine = `room:${uid()}`;
  await expectRefusal(socket, `room:${uid()}`, { token: mint({ id: "f", channel: mine }) }, "forbidden");
  await expectRefusal(socket, `other:${uid()}`, { token: mint({ id: "f", channels: ["room:*"] }) }, "forbidden");
  // The socket credential covers only its own topic too.
  const scoped = await connect(t, { params: { token: mint({ id: "f", channel: mine }) } });
  await expectRefusal(scoped, `room:${uid()}`, {}, "forbidden");
  await joinOk(scoped.channel(mine));
  await assertHealthy(socket);
});

test("invalid topic: Redis glob characters, even when the token names the topic", { timeout: 20000 }, async (t) => {
  const socket = await connect(t);
  for (const topic of [`bad*${uid()}`, `bad?${uid()}`, `bad[${uid()}]`]) {
    await expectRefusal(socket, topic, { token: mint({ id: "i", channel: topic }) }, "invalid topic");
  }
  await assertHealthy(socket);
});

test(`too many channels joined: topic number ${MAX_TOPICS + 1} on one socket`, { timeout: 30000 }, async (t) => {
  const socket = await connect(t);
  const prefix = `many:${uid()}:`;
  const token = mint({ id: "many", channels: [`${prefix}*`] });
  const channels = Array.from({ length: MAX_TOPICS }, (_, i) => socket.channel(`${prefix}${i}`, { token }));
  await Promise.all(channels.map((c) => joinOk(c, 10000)));
  await expectRefusal(socket, `${prefix}over`, { token }, "too many channels joined");

  // Refused joins did not count; leaving one makes room for one.
  const left = await pushOutcome(channels[0].leave(), PROMPT_MS, "a reply to phx_leave", socket.frames);
  assert.equal(left.status, "ok");
  await joinOk(socket.channel(`${prefix}again`, { token }));
  await expectRefusal(socket, `${prefix}over2`, { token }, "too many channels joined");
});
