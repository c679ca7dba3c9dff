// Drives the status page in the system's headless Chromium; started by tests/e2e/admin.rs,
// which serves the page and checks the server side. Talks to it over stdin/stdout: prints
// `progress-seen` when the running sync's progress is on the page, then waits for a line
// (the test lets the sync finish). Any failed step throws, and node exits non-zero.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

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
const STEP = 20000;

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
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
  const lastSync = orgRow.locator(".last-sync");
  const before = await lastSync.textContent();

  await orgRow.locator("button.sync-full").click();
  await page.locator("#message", { hasText: `full sync of ${org}: started` }).waitFor();
  await orgRow.locator(".current-run", { hasText: "full sync: discover 1/3" }).waitFor();
  console.log("progress-seen");
  const released = await lines.next();
  if (released.done) throw new Error("the test closed stdin before releasing the sync");
  await page.waitForFunction(
    ([selector, old]) => {
      const cell = document.querySelector(selector);
      return cell && cell.textContent !== old && cell.textContent !== "never";
    },
    [`tr.org[data-org="${org}"] .last-sync`, before],
  );
  await orgRow.locator(".current-run", { hasText: "idle" }).waitFor();

  await page.locator(`tr.plan[data-run="${plan}"] button.approve`).click();
  await page.locator("#message", { hasText: `plan ${plan} approved` }).waitFor();
  await page.locator(`tr.plan[data-run="${plan}"]`).waitFor({ state: "detached" });

  await page.locator("#plugins .rejection", { hasText: rejection }).first().waitFor();

  await page.fill("#device-search", "<script>");
  await page.click("#device-filter button[type=submit]");
  await page.locator("#devices tbody tr", { hasText: "<script>alert(1)</script>" }).waitFor();
  await page.locator("#device-count", { hasText: "1–1 of 1" }).waitFor();
  await page.locator("#devices tbody a.device-link").click();
  await page.locator("#history tbody tr", { hasText: "policy says quarantine" }).waitFor();
  await page.locator("#device-title", { hasText: "mallory" }).waitFor();

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
