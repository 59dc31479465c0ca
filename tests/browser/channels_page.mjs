// docs/examples/channels.html in headless Chromium, unchanged: it gets a token from the gateway's
// POST /token (CORS, from the page's own origin), joins room:lobby with the official phoenix
// client, shows itself as present, renders an event the Rust test publishes on Redis, and pushes
// what is typed into the form.
//
//   node channels_page.mjs --page http://127.0.0.1:P/channels.html?gateway=http://127.0.0.1:G \
//     --event EVENT --expect TEXT --say TEXT [--screenshot PATH]
//
// Steps (stdout): `joined <user>` (publish to to:room:lobby:EVENT now), `rendered` (an event
// EVENT whose text contains --expect is on the page), `said` (--say was submitted).
//
// The page imports phoenix from a CDN through its import map; this machine (and CI) reaches no
// CDN, so that one request is answered with the same file from the pinned npm package. The
// page's integrity hash still checks every byte. Any other request off this machine fails the run.

import { readFileSync } from "node:fs";
import { log, run, step, until } from "./lib.mjs";

const CDN = /^https:\/\/cdn\.jsdelivr\.net\/npm\/phoenix@([^/]+)\/priv\/static\/phoenix\.mjs$/;
const phoenixDir = new URL("./node_modules/phoenix/", import.meta.url);
const phoenixVersion = JSON.parse(readFileSync(new URL("package.json", phoenixDir), "utf8")).version;
const phoenixModule = readFileSync(new URL("priv/static/phoenix.mjs", phoenixDir));

const local = (url) => ["127.0.0.1", "localhost", "[::1]"].includes(new URL(url).hostname);

run(
  {
    page: { type: "string", required: true },
    event: { type: "string", required: true },
    expect: { type: "string", required: true },
    say: { type: "string", required: true },
  },
  async ({ page, args, problems }) => {
    await page.setRequestInterception(true);
    page.on("request", (req) => {
      const url = req.url();
      const cdn = url.match(CDN);
      if (cdn && cdn[1] === phoenixVersion) {
        req.respond({
          status: 200,
          contentType: "text/javascript",
          headers: { "access-control-allow-origin": "*" },
          body: phoenixModule,
        });
      } else if (cdn) {
        problems.push(
          `the page imports phoenix@${cdn[1]} but tests/browser has phoenix@${phoenixVersion}: ` +
            "pin the same version in tests/browser/package.json and run npm install there",
        );
        req.abort();
      } else if (url.startsWith("data:") || local(url)) {
        req.continue();
      } else {
        problems.push(`the page asked for ${url}, which is off this machine`);
        req.abort();
      }
    });

    const res = await page.goto(args.page, { waitUntil: "domcontentloaded" });
    if (res.status() !== 200) throw new Error(`GET ${args.page} answered ${res.status()}`);

    const status = () => document.querySelector("#status").textContent;
    const user = await until(
      page,
      'the status "joined room:lobby as <user>"',
      () => document.querySelector("#status").textContent.match(/^joined room:lobby as (user-\S+)$/)?.[1],
      [],
      status,
    );
    log(`joined as ${user}`);
    // Presence: the page lists itself (in bold) once the gateway's presence_state arrived.
    await until(
      page,
      `${user} in the present list, marked as this tab`,
      (user) => [...document.querySelectorAll("#present li.you")].some((li) => li.textContent === user),
      [user],
      () => document.querySelector("#present").innerText || "(nobody present)",
    );
    step("joined", user);

    const rendered = await until(
      page,
      `an event "${args.event}" containing ${JSON.stringify(args.expect)} in the event list`,
      (event, expect) =>
        [...document.querySelectorAll("#events li")]
          .map((li) => li.textContent)
          .find((t) => t.includes(` ${event} `) && t.includes(expect)),
      [args.event, args.expect],
      () => document.querySelector("#events").innerText || "(no events)",
    );
    log(`rendered: ${rendered}`);
    step("rendered");

    await page.type("#text", args.say);
    await page.click("#say button");
    await until(page, "the text box to be cleared after Say", () => document.querySelector("#text").value === "");
    step("said");
  },
);
