// channel.leave(): an ok reply, and from then on the topic's publishes no longer reach that
// socket, while other members keep theirs and a later join gets them again.

import { test } from "node:test";
import assert from "node:assert/strict";
import { PROMPT_MS, WAIT_MS, connect, events, joinOk, mint, publish, pushOutcome, redis, uid } from "./harness.mjs";

test("leave: ok reply, then no more publishes for that socket", { timeout: 20000 }, async (t) => {
  const topic = `room:${uid()}`;
  const control = `room:${uid()}`;
  const r = await redis(t);
  const token = mint({ id: "leaver", channels: [topic, control] });

  const socket = await connect(t);
  const channel = socket.channel(topic, { token });
  const controlChannel = socket.channel(control, { token });
  const controlEvt = events(controlChannel, "evt");
  await Promise.all([joinOk(channel), joinOk(controlChannel)]);

  // Another socket stays on the topic throughout.
  const stayer = await connect(t);
  const stayerChannel = stayer.channel(topic, { token: mint({ id: "stayer", channel: topic }) });
  const stayerEvt = events(stayerChannel, "evt");
  await joinOk(stayerChannel);

  const leavePush = channel.leave();
  const left = await pushOutcome(leavePush, PROMPT_MS, "the reply to phx_leave", socket.frames);
  assert.equal(left.status, "ok", `leave answered ${JSON.stringify(left)}`);
  // phoenix.js answers a leave itself at once; the gateway's own reply says it has left there.
  const isReply = (f) => f.topic === topic && f.event === "phx_reply" && f.ref === leavePush.ref;
  const reply = await socket.frames.first(isReply, PROMPT_MS, "the gateway's reply to phx_leave");
  assert.equal(reply.payload.status, "ok", `the gateway answered ${JSON.stringify(reply)}`);
  const leftAt = socket.frames.frames.length;

  // Published in this order: the left topic first, then the control topic. Once the control
  // message is in, the left topic's message would have been too.
  await publish(r, `to:${topic}:evt`, '{"after":"leave"}');
  await publish(r, `to:${control}:evt`, '{"control":1}');
  assert.deepEqual(await controlEvt.next(WAIT_MS, "the control publish", socket.frames), { control: 1 });
  const leaked = socket.frames.frames.slice(leftAt).filter((f) => f.topic === topic && f.event === "evt");
  assert.deepEqual(leaked, [], "nothing for the left topic reached the socket");
  assert.deepEqual(await stayerEvt.next(WAIT_MS, "the publish on the other socket", stayer.frames), { after: "leave" });

  // Joining again (a new channel object, as phoenix.js requires) gets publishes again.
  const again = socket.channel(topic, { token });
  const againEvt = events(again, "evt");
  await joinOk(again);
  await publish(r, `to:${topic}:evt`, '{"back":true}');
  assert.deepEqual(await againEvt.next(WAIT_MS, "the publish after rejoining", socket.frames), { back: true });
});

test("leave as the last member on the node, then join again: the topic is subscribed again", { timeout: 20000 }, async (t) => {
  const topic = `room:${uid()}`;
  const r = await redis(t);
  const token = mint({ id: "solo", channel: topic });
  const socket = await connect(t);
  for (let round = 0; round < 3; round++) {
    const channel = socket.channel(topic, { token });
    const evt = events(channel, "evt");
    await joinOk(channel);
    await publish(r, `to:${topic}:evt`, JSON.stringify({ round }));
    assert.deepEqual(await evt.next(WAIT_MS, `the publish in round ${round}`, socket.frames), { round });
    const left = await pushOutcome(channel.leave(), PROMPT_MS, "the reply to phx_leave", socket.frames);
    assert.equal(left.status, "ok");
  }
});
