"""python-policy: an example easgate access policy written in Python.

Minimum OS versions per platform. Enrolled, compliant devices are allowed only when their
platform's `osVersion` is at least the minimum in the settings; see README.md for the table.

Settings (the manifest's `[settings]`, handed to `configure` as JSON):
`{"minOsVersion": {"iOS": "17.0", "Android": "13"}, "unlistedPlatforms": "allow"}`.
Platform names compare case-insensitively. `unlistedPlatforms` is `allow` (the default) or
`quarantine`: what happens to an enrolled, compliant device whose platform has no minimum.
"""

import json

import wit_world
from wit_world.imports import host
from wit_world.imports.types import ComplianceState, Decision, Verdict
from componentize_py_types import Err

# Compliance states under which a device may sync (Intune's grace period counts as compliant).
_COMPLIANT = (ComplianceState.COMPLIANT, ComplianceState.IN_GRACE_PERIOD)
_UNLISTED = {"allow": Verdict.ALLOW, "quarantine": Verdict.QUARANTINE}

# The host calls `configure` on every fresh instance before `decide`, so module state lives for
# exactly one call.
_minimums = {}
_unlisted = Verdict.ALLOW


def parse_version(text):
    """`17.4.1` -> (17, 4, 1); None when it does not start with a number."""
    parts = []
    for piece in text.strip().split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break  # `4b` ends the version: 17.4b -> (17, 4)
    return tuple(parts) if parts else None


def at_least(version, minimum):
    width = max(len(version), len(minimum))
    pad = lambda v: v + (0,) * (width - len(v))
    return pad(version) >= pad(minimum)


def decision(verdict, reason, notify=None):
    if notify is None:
        notify = verdict in (Verdict.BLOCK, Verdict.QUARANTINE)
    return Decision(verdict=verdict, reason=reason, notify=notify)


def decide_one(device):
    managed = device.managed
    if managed is None:
        return decision(Verdict.QUARANTINE, "not-enrolled")
    if managed.compliance_state not in _COMPLIANT:
        return decision(Verdict.BLOCK, "noncompliant")
    minimum = _minimums.get(managed.operating_system.lower())
    if minimum is None:
        return decision(_unlisted, "no-os-minimum")
    version = parse_version(managed.os_version)
    if version is None:
        return decision(Verdict.BLOCK, "os-version-unknown")
    if not at_least(version, minimum):
        return decision(Verdict.BLOCK, "os-too-old")
    return decision(Verdict.ALLOW, "compliant")


class WitWorld(wit_world.WitWorld):
    def configure(self, settings):
        global _minimums, _unlisted
        try:
            parsed = json.loads(settings)
        except ValueError as err:
            raise Err(f"settings are not JSON: {err}")
        unknown = set(parsed) - {"minOsVersion", "unlistedPlatforms"}
        if unknown:
            raise Err(f"unknown setting(s) {sorted(unknown)}: expected minOsVersion, unlistedPlatforms")
        minimums = {}
        for platform, text in parsed.get("minOsVersion", {}).items():
            version = parse_version(text) if isinstance(text, str) else None
            if version is None:
                raise Err(f"minOsVersion.{platform} = {text!r}: expected a version like \"17.0\"")
            minimums[platform.lower()] = version
        unlisted = parsed.get("unlistedPlatforms", "allow")
        if unlisted not in _UNLISTED:
            raise Err(f"unlistedPlatforms = {unlisted!r}: expected \"allow\" or \"quarantine\"")
        _minimums, _unlisted = minimums, _UNLISTED[unlisted]

    def decide(self, info, devices):
        decisions = [decide_one(device) for device in devices]
        host.log(host.Level.DEBUG, f"decided {len(decisions)} device(s)")
        return decisions
