// phoenix.js's own Presence class, fed by refract's presence_state and presence_diff, converges
// to the true membership on every client.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Presence } from "phoenix";
import { WAIT_MS, connect, deferred, joinOk, mint, pushOutcome, PROMPT_MS, uid, within } from "./harness.mjs";

/** A channel with a Presence, joined; `converge` waits until the list matches. */
async function member(t, topic, id) {
  const socket = await connect(t);
  const channel = socket.channel(topic, { token: mint({ id, channel: topic }) });
  const presence = new Presence(channel);
  const watchers = new Set();
  presence.onSync(() => watchers.forEach((w) => w()));
  await joinOk(channel);
  return { socket, channel, presence, watchers };
}

/** `{id: metaCount}` of a presence list. */
function summary(presence) {
  const out = {};
  presence.list((key, { metas }) => {
    out[key] = metas.length;
    for (const meta of metas) {
      assert.equal(typeof meta.phx_ref, "string", `every meta has a phx_ref: ${JSON.stringify(meta)}`);
    }
  });
  return out;
}

/** Waits until `m`'s presence list is `expected` (`{id: metaCount}`). */
function converge(m, expected, what) {
  const d = deferred();
  const key = JSON.stringify(Object.entries(expected).sort());
  const check = () => {
    if (JSON.stringify(Object.entries(summary(m.presence)).sort()) === key) d.resolve();
  };
  m.watchers.add(check);
  check();
  return within(d.promise, WAIT_MS, () => `${what}: presence list ${key}, last seen ${JSON.stringify(summary(m.presence))}`, m.socket.frames).finally(() =>
    m.watchers.delete(check),
  );
}

test("Presence: two ids join and both lists converge; one leaves and the other's list follows", { timeout: 30000 }, async (t) => {
  const topic = `room:${uid()}`;
  const alice = await member(t, topic, "alice");
  await converge(alice, { alice: 1 }, "alice alone");
  const bob = await member(t, topic, "bob");
  await converge(alice, { alice: 1, bob: 1 }, "alice sees bob");
  await converge(bob, { alice: 1, bob: 1 }, "bob sees alice (from presence_state)");

  const left = await pushOutcome(bob.channel.leave(), PROMPT_MS, "bob's leave reply", bob.socket.frames);
  assert.equal(left.status, "ok");
  await converge(alice, { alice: 1 }, "alice sees bob leave");

  // A socket that just goes away (no phx_leave) leaves too.
  const carol = await member(t, topic, "carol");
  await converge(alice, { alice: 1, carol: 1 }, "alice sees carol");
  await new Promise((resolve) => carol.socket.disconnect(resolve));
  await converge(alice, { alice: 1 }, "alice sees carol's socket close");
});

test("Presence: one id on two sockets is one key with two metas", { timeout: 30000 }, async (t) => {
  const topic = `room:${uid()}`;
  const watcher = await member(t, topic, "watcher");
  const tab1 = await member(t, topic, "dave");
  const tab2 = await member(t, topic, "dave");
  await converge(watcher, { watcher: 1, dave: 2 }, "watcher sees both of dave's tabs");
  await converge(tab1, { watcher: 1, dave: 2 }, "tab 1 sees the same");
  await new Promise((resolve) => tab2.socket.disconnect(resolve));
  await converge(watcher, { watcher: 1, dave: 1 }, "one tab closed");
  await converge(tab1, { watcher: 1, dave: 1 }, "tab 1 sees the other close");
});
