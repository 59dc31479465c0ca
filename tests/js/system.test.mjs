// The `system` topic's clock: `datetime` every channels.system.datetime_interval.

import { test } from "node:test";
import assert from "node:assert/strict";
import { WAIT_MS, connect, events, joinOk, mint } from "./harness.mjs";

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

test("system: datetime broadcasts with an RFC 3339 time and a rising counter", { timeout: 20000 }, async (t) => {
  const socket = await connect(t);
  const channel = socket.channel("system", { token: mint({ id: "clock-watcher", channel: "system" }) });
  const ticks = events(channel, "datetime");
  await joinOk(channel);
  const first = await ticks.next(WAIT_MS, "a datetime tick", socket.frames);
  const second = await ticks.next(WAIT_MS, "another datetime tick", socket.frames);
  for (const tick of [first, second]) {
    assert.match(tick.datetime, RFC3339, `datetime in ${JSON.stringify(tick)}`);
    assert.ok(Math.abs(Date.parse(tick.datetime) - Date.now()) < 60000, `a current time: ${tick.datetime}`);
    assert.ok(Number.isInteger(tick.counter), `an integer counter in ${JSON.stringify(tick)}`);
  }
  assert.ok(second.counter > first.counter, `the counter rises: ${first.counter} then ${second.counter}`);
  assert.ok(Date.parse(second.datetime) >= Date.parse(first.datetime));
});
