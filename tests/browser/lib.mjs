// What the page scripts share: headless Chromium at /usr/bin/chromium (or $CHROMIUM) through
// puppeteer-core, a line protocol with the Rust test, and a screenshot when anything fails.
//
// Protocol: the script prints `step <name> [detail]` on stdout when the page has reached a point
// the test waits for (everything else goes to stderr). A line `abort [why]` on stdin (the test
// failed on its side) ends the run as a failure, screenshot included. Exit 0 only when every
// check passed.

import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import puppeteer from "puppeteer-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** How long one wait for the page may take; the Rust test allows a little more per step. */
export const WAIT_MS = Number(process.env.BROWSER_WAIT_MS || 10000);

export function step(name, detail = "") {
  process.stdout.write(`step ${name}${detail ? " " + detail : ""}\n`);
}

export function log(...args) {
  console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

/**
 * Waits until `fn(...args)`, run in the page, returns something truthy, and returns it. On
 * timeout the error names `what` and what `describe` (also run in the page) saw then.
 */
export async function until(page, what, fn, args = [], describe = () => document.body.innerText) {
  try {
    const handle = await page.waitForFunction(fn, { timeout: WAIT_MS, polling: 100 }, ...args);
    return await handle.jsonValue();
  } catch (err) {
    if (err?.name !== "TimeoutError") throw err;
    let seen;
    try {
      seen = await page.evaluate(describe);
    } catch (e) {
      seen = `(could not read the page: ${e.message})`;
    }
    throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}; the page showed:\n${seen}`);
  }
}

/**
 * Parses `options` (node:util parseArgs) plus `--screenshot PATH`, launches Chromium, runs
 * `main({ page, args })` and exits 0, or 1 with a message and a screenshot at PATH.
 */
export async function run(options, main) {
  const { values: args } = parseArgs({
    options: { ...options, screenshot: { type: "string" } },
    strict: true,
  });
  for (const [name, opt] of Object.entries(options)) {
    if (opt.required && args[name] === undefined) fail(`--${name} is required`);
  }
  if (!existsSync(CHROMIUM)) {
    fail(`no Chromium at ${CHROMIUM}: install Debian's chromium (apt-get install chromium) or set CHROMIUM`);
  }

  const problems = [];
  let browser;
  let page;
  let failed = false;
  const finish = async (err) => {
    if (failed) return;
    failed = true;
    const why = err instanceof Error ? err.message : String(err);
    console.error(`FAILED: ${why}`);
    if (problems.length) console.error(`page errors:\n  ${problems.join("\n  ")}`);
    if (page && args.screenshot) {
      try {
        mkdirSync(dirname(args.screenshot), { recursive: true });
        await page.screenshot({ path: args.screenshot, fullPage: true });
        console.error(`screenshot: ${args.screenshot}`);
      } catch (e) {
        console.error(`no screenshot: ${e.message}`);
      }
    }
    await browser?.close().catch(() => {});
    process.exit(1);
  };

  // The Rust test says so when it failed on its side; the page is still up for the screenshot.
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.startsWith("abort")) finish(`the test aborted: ${line.slice(5).trim() || "(no reason)"}`);
  });

  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Root (as in CI) needs --no-sandbox; /dev/shm can be small in containers.
      args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
      timeout: 20000,
    });
    page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 900 });
    page.on("console", (msg) => log(`console.${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (err) => {
      problems.push(err.message);
      log(`pageerror: ${err.message}`);
    });
    page.on("requestfailed", (req) => log(`request failed: ${req.url()} ${req.failure()?.errorText}`));
    await main({ page, args, problems });
    if (problems.length) throw new Error(`the page threw: ${problems.join("; ")}`);
  } catch (err) {
    await finish(err);
    return;
  }
  await browser.close();
  process.exit(0);
}

function fail(message) {
  console.error(`FAILED: ${message}`);
  process.exit(1);
}
