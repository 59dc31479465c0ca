// The admin page (GET /admin) in headless Chromium: a wrong token is refused on the page, the
// right one shows the dashboard, and a connection the Rust test opens on --route shows up in
// that route's row and goes again when the test closes it.
//
//   node admin.mjs --url http://127.0.0.1:PORT --token TOKEN --route /echo [--screenshot PATH]
//
// Steps (stdout): `logged-in` (the route shows 0 connections: open one now), `connection-shown`
// (it shows 1: close it now), `connection-gone` (back to 0).

import { run, step, until } from "./lib.mjs";

async function showsConnections(page, route, n) {
  await until(
    page,
    `route ${route} to show data-connections="${n}"`,
    (route, n) =>
      document
        .querySelector(`#routes tr[data-route="${CSS.escape(route)}"] [data-connections]`)
        ?.getAttribute("data-connections") === String(n),
    [route, n],
    () => document.querySelector("#routes")?.innerText ?? document.body.innerText,
  );
}

async function signIn(page, token) {
  await page.$eval("#token", (input) => {
    input.value = "";
  });
  await page.type("#token", token);
  await page.click("#login-form button[type=submit]");
}

run(
  {
    url: { type: "string", required: true },
    token: { type: "string", required: true },
    route: { type: "string", required: true },
  },
  async ({ page, args }) => {
    const res = await page.goto(`${args.url}/admin`, { waitUntil: "domcontentloaded" });
    if (res.status() !== 200) throw new Error(`GET /admin answered ${res.status()}`);

    // Not signed in: the login form, token mode (the API asks for Bearer), no dashboard.
    await until(
      page,
      "the token login form",
      () => !document.querySelector("#login").hidden && !document.querySelector("#token-fields").hidden,
    );
    if (!(await page.$eval("#dashboard", (d) => d.hidden))) throw new Error("the dashboard shows before signing in");

    await signIn(page, `${args.token}-wrong`);
    await until(
      page,
      'the login error "those credentials were refused"',
      () =>
        document.querySelector("#login-error").textContent === "those credentials were refused" &&
        document.querySelector("#dashboard").hidden,
    );

    await signIn(page, args.token);
    await until(page, "the dashboard with this node ready", () =>
      document.querySelector("#login").hidden &&
      !document.querySelector("#dashboard").hidden &&
      document.querySelector("#ready").textContent === "ready",
    );
    await showsConnections(page, args.route, 0);
    step("logged-in");

    await showsConnections(page, args.route, 1);
    step("connection-shown");

    await showsConnections(page, args.route, 0);
    step("connection-gone");
  },
);
