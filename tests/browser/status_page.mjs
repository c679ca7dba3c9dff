// Drives the status page of a real `easgate run` in the system's headless Chromium; started by
// tests/e2e/daemon.rs, which runs the daemon against the lab and checks the lab afterwards.
// The daemon's first full sync was held by the blast-radius guard, and a broken plugin file was
// rejected. Any failed step throws, and node exits non-zero; `done` on stdout means it all passed.
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
