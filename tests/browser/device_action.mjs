// Drives the status page's device action in headless Chromium against a real `easgate run`
// (started by tests/e2e/device_actions.rs over the lab, after a full sync): opens a device,
// asks for an account-only wipe, checks the confirmation dialog shows the device as Exchange
// has it, is refused without a reason, confirms with one, and finds the audit record on the
// page. `done` on stdout means it all passed; the Rust test then checks the lab.
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
const device = env("EASGATE_DEVICE");
const identity = env("EASGATE_IDENTITY");
const model = env("EASGATE_MODEL");
const screenshot = env("EASGATE_SCREENSHOT");
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
try {
  await page.goto(url);
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");
  await page.locator("#device-actions tbody", { hasText: "no device action yet" }).waitFor();

  // Find the device and open it.
  await page.fill("#device-search", device);
  await page.click("#device-filter button[type=submit]");
  await page.locator("a.device-link", { hasText: device }).first().click();
  await page.locator("#device-detail").waitFor();

  // Step one: the dialog shows the device as Exchange has it and what will happen.
  await page.click('button.device-action[data-action="account-wipe"]');
  const dialog = page.locator("#action-dialog");
  await dialog.waitFor();
  await dialog.locator("#action-device", { hasText: identity }).waitFor();
  await dialog.locator("#action-device", { hasText: model }).waitFor();
  await dialog.locator("#action-device", { hasText: "Last sync" }).waitFor();
  // Where the user's notice goes (read with the lookup).
  await dialog.locator("#action-device", { hasText: /Notice to.*@/ }).waitFor();
  await dialog.locator("#action-effect", { hasText: "-AccountOnly" }).waitFor();

  // No reason: refused, the dialog stays open.
  await page.click("#action-confirm");
  await dialog.locator("#action-error", { hasText: "reason is required" }).waitFor();
  if (!(await dialog.evaluate((d) => d.open))) throw new Error("the dialog closed without a reason");

  await page.fill("#action-reason", "lost phone, from the page");
  await page.click("#action-confirm");
  await page.locator("#message", { hasText: /account-wipe of .*: done \(notice: sent\)/ }).waitFor();
  const record = page.locator("tr.device-action-record").first();
  await record.locator("td", { hasText: "lost phone, from the page" }).waitFor();
  await record.locator("td", { hasText: /^done$/ }).waitFor();
  await record.locator("td", { hasText: /^api$/ }).waitFor();

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
