// js-policy: an example easgate access policy written in JavaScript.
//
// A grace period for newly enrolled devices, by ownership: a device that is enrolled but not
// (yet) compliant may sync for `graceDays[ownership]` days after its enrolment, counted on
// `sync-info.now` (never on the wall clock, so rehearsals and tests are reproducible). See
// README.md for the table.
//
// Settings (the manifest's `[settings]`, as JSON):
// `{"graceDays": {"company": 14, "personal": 3, "unknown": 0}}`; an ownership left out gets 0.
//
// WIT to JavaScript, as componentize-js maps it: records are objects with camelCase fields,
// enums are their kebab-case names as strings, `s64` is a BigInt, an `option` is the value or
// `undefined`, and throwing from a function returning `result<_, string>` returns the error.

import { log } from "easgate:policy/host@0.1.0";

const DAY = 86400n;
const OWNERSHIPS = ["company", "personal", "unknown"];
const COMPLIANT = new Set(["compliant", "in-grace-period"]);

// The host configures every fresh instance before its one `decide`: module state lives for
// exactly one call.
let graceSeconds = { company: 0n, personal: 0n, unknown: 0n };

export function configure(settings) {
  let parsed;
  try {
    parsed = JSON.parse(settings);
  } catch (err) {
    throw `settings are not JSON: ${err.message}`;
  }
  const unknown = Object.keys(parsed).filter((key) => key !== "graceDays");
  if (unknown.length > 0) {
    throw `unknown setting(s) ${unknown.join(", ")}: expected graceDays`;
  }
  const next = { company: 0n, personal: 0n, unknown: 0n };
  for (const [ownership, days] of Object.entries(parsed.graceDays ?? {})) {
    if (!OWNERSHIPS.includes(ownership)) {
      throw `graceDays.${ownership}: expected one of ${OWNERSHIPS.join(", ")}`;
    }
    if (!Number.isInteger(days) || days < 0 || days > 365) {
      throw `graceDays.${ownership} = ${JSON.stringify(days)}: expected whole days from 0 to 365`;
    }
    next[ownership] = BigInt(days) * DAY;
  }
  graceSeconds = next;
}

function decision(verdict, reason) {
  // Anything that is not an allow is worth telling the user about, and so is a grace period.
  const notify = verdict !== "allow" || reason === "grace-period";
  return { verdict, reason, notify };
}

function decideOne(now, device) {
  const managed = device.managed;
  if (managed === undefined) {
    return decision("quarantine", "not-enrolled");
  }
  if (COMPLIANT.has(managed.complianceState)) {
    return decision("allow", "compliant");
  }
  if (managed.enrolled === undefined) {
    return decision("block", "enrolment-date-unknown");
  }
  const age = now - managed.enrolled;
  if (age >= 0n && age < graceSeconds[managed.ownership]) {
    return decision("allow", "grace-period");
  }
  return decision("block", "grace-expired");
}

export function decide(info, devices) {
  const decisions = devices.map((device) => decideOne(info.now, device));
  log("debug", `decided ${decisions.length} device(s)`);
  return decisions;
}
