// Drives the status page of a real `easgate run` in the system's headless Chromium; started by
// tests/e2e/daemon.rs, which runs the daemon against the lab and checks the lab afterwards.
// The daemon's first full sync was held by the blast-radius guard, and a broken plugin file was
// rejected. Any failed step throws, and node exits non-zero; `done` on stdout means it all passed.
// Besides driving the daemon, it checks that each view shows the real data of those syncs: what
// the held plan would do, the run history, the trend charts, the notice outbox and the devices'
// Exchange state as enforced.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env("EASGATE_URL");
const token = env("EASGATE_TOKEN");
const org = env("EASGATE_ORG");
const plan = env("EASGATE_PLAN");
const rejection = env("EASGATE_REJECTION");
const screenshot = env("EASGATE_SCREENSHOT");
// A real sync takes a while in a debug build on a loaded machine.
const STEP = 90000;

const profile = mkdtempSync(join(tmpdir(), "easgate-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(STEP);
const pageErrors = [];
page.on("pageerror", (err) => pageErrors.push(err.message));
const lastSyncChanged = (old) => page.waitForFunction(
  ([selector, old]) => {
    const cell = document.querySelector(selector);
    return cell && cell.textContent !== old && cell.textContent !== "never";
  },
  [`tr.org[data-org="${org}"] .last-sync`, old],
);
try {
  await page.goto(url);
  // A wrong token is refused with the server's message.
  await page.fill("#token", "not-the-token");
  await page.click("#login button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#error").textContent.includes("wrong"));
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");
  const orgRow = page.locator(`tr.org[data-org="${org}"]`);
  await orgRow.waitFor();
  await orgRow.locator("span.connected").waitFor();
  const lastSync = orgRow.locator(".last-sync");
  // The held first sync did not succeed.
  await orgRow.locator(".last-sync", { hasText: "never" }).waitFor();

  // The held plan says what it would do, in Exchange's words, device by device.
  const planRow = page.locator(`tr.plan[data-run="${plan}"]`);
  await planRow.locator(".transition", { hasText: /^Allowed → (Blocked|Quarantined): [1-9][\d ]* devices$/ }).first().waitFor();
  await planRow.locator("details.plan-devices summary").click();
  await planRow.locator("tr.plan-device", { hasText: "\\ExchangeActiveSyncDevices\\" }).first().waitFor();
  const planDevices = await planRow.locator("tr.plan-device").count();
  if (planDevices < 1) throw new Error("the held plan lists no device");

  // Approving the held plan makes the daemon apply it: the page shows the run's stage and
  // how far it got within it (commands done of the plan's, and a bar), then the new last
  // successful sync.
  await page.locator(`tr.plan[data-run="${plan}"] button.approve`).click();
  await page.locator("#message", { hasText: `plan ${plan} approved` }).waitFor();
  await orgRow.locator(".current-run", { hasText: /(quick|full) sync: apply [1-9][\d ]* \/ [1-9][\d ]* commands/ }).waitFor();
  const bar = await orgRow.locator(".current-run progress.stage-progress").evaluate(
    (p) => ({ value: p.value, max: p.max }));
  if (!(bar.value > 0 && bar.value <= bar.max)) throw new Error("apply progress bar: " + JSON.stringify(bar));
  await lastSyncChanged("never");
  await orgRow.locator(".current-run", { hasText: "idle" }).waitFor();
  await page.locator(`tr.plan[data-run="${plan}"]`).waitFor({ state: "detached" });

  // Right after the approved plan's apply (no inventory read since), the devices it blocked
  // show as Blocked on Exchange, not as the inventory last read them. (A device whose mailbox
  // is gone has no list to be put on.)
  await page.selectOption("#device-verdict", "block");
  await page.click("#device-filter button[type=submit]");
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#devices tbody tr")];
    return rows.length && rows.every((r) => r.children[5]?.textContent === "block");
  });
  const states = await page.locator("#devices tbody tr[data-mailbox=yes]").evaluateAll(
    (rows) => rows.map((r) => [r.children[4].textContent, r.children[5].textContent]));
  if (!states.length || !states.every(([state, verdict]) => state === "Blocked" && verdict === "block")) {
    throw new Error("blocked devices' states: " + JSON.stringify(states));
  }
  await page.selectOption("#device-verdict", "");
  const afterApproval = await lastSync.textContent();
  // Sync times have a resolution of one second: past this one, the next run's end shows as a
  // change even when the run is short.
  await page.waitForTimeout(1100);

  // A manual full sync runs and completes with a later last successful sync.
  await orgRow.locator("button.sync-full").click();
  await page.locator("#message", { hasText: `full sync of ${org}: started` }).waitFor();
  await orgRow.locator(".current-run", { hasText: /full sync: [\w ]+ \d+/ }).waitFor();
  await lastSyncChanged(afterApproval);
  await orgRow.locator(".current-run", { hasText: "idle" }).waitFor();

  await page.locator("#plugins .rejection", { hasText: rejection }).first().waitFor();

  // The run history: the approved plan's run and the manual full sync, each with its duration.
  const view = page.locator(`section.org-view[data-org="${org}"]`);
  await view.locator(`tr.run[data-run="${plan}"]`, { hasText: /succeeded \(approved\)/ }).waitFor();
  if ((await view.locator("tr.run", { hasText: "succeeded" }).count()) < 2) {
    throw new Error("the history misses a run: " + (await view.locator("table.runs").textContent()));
  }
  for (const text of await view.locator("tr.run").allTextContents()) {
    if (!/\d+ s|\d+ min/.test(text)) throw new Error("a run without its duration: " + text);
  }

  // The trends: a point per run that ended, the last one the devices per verdict shown above;
  // a bar per run that ended.
  const trend = view.locator("svg.verdict-trend");
  await page.waitForFunction((sel) => Number(document.querySelector(sel)?.dataset.points) >= 2,
    `section.org-view[data-org="${org}"] svg.verdict-trend`);
  const counts = await orgRow.locator("td:nth-child(5)").textContent();
  for (const verdict of ["allow", "block", "quarantine"]) {
    const shown = Number(new RegExp(verdict + " (\\d+)").exec(counts)[1]);
    const plotted = await trend.locator(`circle.point[data-verdict="${verdict}"]`).last().getAttribute("data-count");
    if (Number(plotted) !== shown) throw new Error(`trend ${verdict}: ${plotted}, the status says ${shown}`);
  }
  if (!(Number(await trend.locator(`circle.point[data-verdict="block"]`).last().getAttribute("data-count")) > 0)) {
    throw new Error("the trend shows no blocked device after the sync");
  }
  const bars = await view.locator("svg.sync-durations rect.bar").count();
  if (bars < 2) throw new Error(`${bars} duration bars`);

  // The notice outbox: the syncs' notices went to the lab's SMTP sink.
  await view.locator(".outbox-counts .count-sent", { hasText: /^sent [1-9]/ }).waitFor();
  await view.locator("select.outbox-status").selectOption("sent");
  await view.locator("tr.notice").first().waitFor();
  const statuses = await view.locator("tr.notice").evaluateAll((rows) => rows.map((r) => r.dataset.status));
  if (!statuses.every((s) => s === "sent")) throw new Error("the sent filter shows " + statuses.join(", "));


  await page.screenshot({ path: screenshot, fullPage: true });
  if (pageErrors.length) throw new Error("errors on the page: " + pageErrors.join("; "));
  console.log("done");
} catch (err) {
  await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  throw err;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(0);
