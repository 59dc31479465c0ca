// The admin page in headless Chromium, for bench/admin.sh: signs in with the token, waits until
// the route's row shows the expected number of connections (and this node is in the node list),
// then saves a full-page screenshot and prints what the page shows (its text) on stdout.
//
//   node bench/admin-screenshot.mjs --url http://127.0.0.1:PORT --token TOKEN --route /echo \
//       --connections 1000 --out docs/benchmarks/admin-1000.png [--wait-ms 30000]
//
// Chromium is /usr/bin/chromium (or $CHROMIUM); puppeteer-core comes from tests/browser's
// node_modules (`npm ci` there). Bounded: it gives up after --wait-ms, and exits 1 then, with
// a screenshot of what the page showed at that moment next to --out (suffix .failed.png).

import { existsSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { parseArgs } from "node:util";

const require = createRequire(new URL("../tests/browser/package.json", import.meta.url));
const puppeteer = require("puppeteer-core");

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    route: { type: "string", default: "/echo" },
    connections: { type: "string" },
    out: { type: "string" },
    "wait-ms": { type: "string", default: "30000" },
  },
  strict: true,
});
for (const k of ["url", "token", "connections", "out"]) {
  if (!args[k]) {
    console.error(`--${k} is required`);
    process.exit(2);
  }
}
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
if (!existsSync(CHROMIUM)) {
  console.error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
  process.exit(2);
}
const WAIT_MS = Number(args["wait-ms"]);
const log = (...a) => console.error(`[screenshot ${new Date().toISOString().slice(11, 23)}]`, ...a);

// Whatever happens, this process is gone after the wait plus a margin.
setTimeout(() => {
  console.error("screenshot: overall deadline passed");
  process.exit(1);
}, WAIT_MS + 30000).unref();

const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
  timeout: 20000,
});
let page;
try {
  page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 900 });
  page.on("pageerror", (err) => log(`pageerror: ${err.message}`));
  page.on("response", (r) => log(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`));

  const res = await page.goto(`${args.url}/admin`, { waitUntil: "domcontentloaded" });
  if (res.status() !== 200) throw new Error(`GET /admin answered ${res.status()}`);
  await page.waitForSelector("#token", { visible: true, timeout: WAIT_MS });
  await page.type("#token", args.token);
  await page.click("#login-form button[type=submit]");

  // Signed in, ready, the route at the expected count, this node listed with a heartbeat, and
  // the Channels table filled (when there are sockets): the state the screenshot is meant to show.
  await page.waitForFunction(
    (route, n) => {
      const $ = (s) => document.querySelector(s);
      if (!$("#login").hidden || $("#dashboard").hidden || $("#ready").textContent !== "ready") return false;
      const cell = $(`#routes tr[data-route="${CSS.escape(route)}"] [data-connections]`);
      if (cell?.getAttribute("data-connections") !== String(n)) return false;
      const id = ($("#node-id").textContent || "").split(" · ")[0];
      return !!document.querySelector(`#nodes tr[data-node="${CSS.escape(id)}"]`);
    },
    { timeout: WAIT_MS, polling: 200 },
    args.route,
    args.connections,
  );
  log(`route ${args.route} shows ${args.connections} connections`);
  mkdirSync(dirname(args.out), { recursive: true });
  await page.screenshot({ path: args.out, fullPage: true });
  log(`screenshot: ${args.out}`);
  process.stdout.write((await page.evaluate(() => document.body.innerText)) + "\n");
  await browser.close();
  process.exit(0);
} catch (err) {
  console.error(`FAILED: ${err.message}`);
  if (page) {
    const failed = args.out.replace(/\.png$/, "") + ".failed.png";
    try {
      await page.screenshot({ path: failed, fullPage: true });
      console.error(`what the page showed: ${failed}`);
      console.error(await page.evaluate(() => document.body.innerText));
    } catch (e) {
      console.error(`no screenshot: ${e.message}`);
    }
  }
  await browser.close().catch(() => {});
  process.exit(1);
}
