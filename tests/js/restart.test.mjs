// phoenix.js reconnects and rejoins by itself when the gateway restarts under it.
//
// The wrapper (tests/channels_js.rs) runs the gateway as the real binary on a fixed port and
// listens on the Redis channel CONTROL: `term` stops it with SIGTERM (graceful), `kill` with
// SIGKILL; either way it starts it again on the same port, waits for /readyz, and answers on
// `<CONTROL>:done` with `restarted ...` or `error: ...`. The wrapper runs the test files one at a
// time (--test-concurrency=1), as this one takes every socket down.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
import { CONTROL, Queue, WAIT_MS, connect, deferred, events, mint, publish, redis, uid, within } from "./harness.mjs";

/** Asks the wrapper to restart the gateway; resolves with its answer. */
async function restartGateway(t, how) {
  const r = await redis(t);
  const sub = await redis(t);
  const answers = new Queue();
  await sub.subscribe(`${CONTROL}:done`, (m) => answers.push(m));
  const listeners = await publish(r, CONTROL, how);
  assert.ok(listeners >= 1, `the wrapper listens on ${CONTROL} (run through cargo test --test channels_js)`);
  return answers;
}

for (const how of ["term", "kill"]) {
  test(`gateway restart (${how}): phoenix.js reconnects, rejoins and receives again`, { timeout: 60000 }, async (t) => {
    const topic = `restart:${uid()}`;
    const r = await redis(t);
    const socket = await connect(t);
    const channel = socket.channel(topic, { token: mint({ id: `survivor-${how}`, channel: topic }) });
    const presence = new Presence(channel);
    const evt = events(channel, "evt");
    const oks = [];
    const firstJoin = deferred();
    const rejoin = deferred();
    channel.join().receive("ok", (resp) => {
      oks.push(resp);
      if (oks.length === 1) firstJoin.resolve();
      if (oks.length === 2) rejoin.resolve();
    });
    await within(firstJoin.promise, WAIT_MS, "the first join", socket.frames);
    const closed = deferred();
    socket.onClose((e) => closed.resolve(e));

    const answers = await restartGateway(t, how);
    const e = await within(closed.promise, WAIT_MS * 2, "the socket to close as the gateway stops", socket.frames);
    if (how === "term") {
      assert.equal(e.code, 1001, `a graceful stop closes with 1001 (going away), got ${e.code} ${JSON.stringify(e.reason)}`);
    }
    const answer = (await answers.next(30000, "the wrapper to restart the gateway")).toString();
    assert.match(answer, /^restarted/, `the wrapper restarted the gateway: ${answer}`);

    await within(rejoin.promise, 20000, "phoenix.js to reconnect and rejoin", socket.frames);
    assert.equal(socket.opens, 2, "one reconnect");
    const suffix = `:${topic}:${channel.joinRef()}`;
    assert.ok(oks[1].id.endsWith(suffix), `rejoin id ${oks[1].id} ends with ${suffix}`);
    assert.notEqual(oks[1].id, oks[0].id, "a new connection");

    await publish(r, `to:${topic}:evt`, JSON.stringify({ after: how }));
    assert.deepEqual(await evt.next(WAIT_MS, "a publish after the restart", socket.frames), { after: how });

    // The old membership is gone, stopped gracefully or killed (then it is a dead node's, and
    // the node came back under the same node_id): the rejoined client's Presence converges to
    // exactly its new join. After SIGKILL that may take the presence liveness TTL.
    {
      const metas = () => presence.list((key, p) => [key, p.metas.map((m) => m.phx_ref)]);
      const d = deferred();
      const check = () => {
        const l = metas();
        if (l.length === 1 && l[0][1].length === 1 && l[0][1][0].endsWith(`:${channel.joinRef()}`)) d.resolve();
      };
      presence.onSync(check);
      check();
      const deadline = how === "term" ? WAIT_MS : 25000;
      await within(d.promise, deadline, () => `presence to hold only the new join ${channel.joinRef()}, have ${JSON.stringify(metas())}`, socket.frames);
    }
  });
}
