"""An independent client of the lab's remote PowerShell face: pypsrp (PyPI), as an operator's
script would use it against Exchange's /PowerShell endpoint.

Usage: pypsrp_client.py URL USER PASSWORD CASE [ARGS...]; prints one JSON object with what the
case observed. The Rust test (tests/lab/powershell.rs) starts the lab and judges the output.

With PYPSRP_AUTH=kerberos (tests/lab/kerberos.rs, KRB5_CONFIG naming the test KDC), USER is a
Kerberos principal and pypsrp authenticates with Kerberos and seals every envelope (its default
encryption="auto" over HTTP), asking for the SPN HTTP/localhost. With PYPSRP_AUTH=ntlm
(tests/lab/ntlm.rs), USER is DOMAIN\\user or the UPN and pypsrp signs in with NTLM, sealing every
envelope the same way. For an https:// URL (NTLM only), PYPSRP_CA names the PEM of the authority
to trust, envelopes are sealed all the same (encryption="always", as the face asks), and pypsrp
binds its sign-in to the TLS channel (its own tls-server-end-point hash of the certificate)
unless PYPSRP_CBT=0.
"""

import os

import json
import sys
import xml.etree.ElementTree as ET
from urllib.parse import urlparse

from pypsrp.exceptions import AuthenticationError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

EXCHANGE = "Microsoft.Exchange"


def connect(url, user, password):
    u = urlparse(url)
    if os.environ.get("PYPSRP_AUTH") == "kerberos":
        return WSMan(
            u.hostname,
            port=u.port,
            path=u.path.strip("/"),
            ssl=False,
            auth="kerberos",
            username=user,
            password=password,
            encryption="auto",
            negotiate_hostname_override="localhost",
            # IIS, not the WinRM service, serves /PowerShell/: its SPN is HTTP/host.
            negotiate_service="HTTP",
            operation_timeout=5,
            read_timeout=15,
        )
    if os.environ.get("PYPSRP_AUTH") == "ntlm":
        https = u.scheme == "https"
        return WSMan(
            u.hostname,
            port=u.port,
            path=u.path.strip("/"),
            ssl=https,
            cert_validation=os.environ["PYPSRP_CA"] if https else True,
            auth="ntlm",
            username=user,
            password=password,
            encryption="always" if https else "auto",
            negotiate_send_cbt=os.environ.get("PYPSRP_CBT") != "0",
            operation_timeout=5,
            read_timeout=15,
        )
    return WSMan(
        u.hostname,
        port=u.port,
        path=u.path.strip("/"),
        ssl=False,
        auth="basic",
        username=user,
        password=password,
        encryption="never",
        operation_timeout=5,
        read_timeout=15,
    )


def plain(value):
    """A deserialized pypsrp value as JSON."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    props = {}
    for source in ("adapted_properties", "extended_properties"):
        for k, v in (getattr(value, source, None) or {}).items():
            props[k] = plain(v)
    out = {"types": list(getattr(value, "types", []) or []), "to_string": getattr(value, "to_string", None)}
    # pypsrp keeps a list-like object's items among its property sets, as the XML of its LST.
    for items in getattr(value, "property_sets", None) or []:
        if isinstance(items, str) and items.startswith(("<LST", "<IE")):
            items = [Serializer().deserialize(e) for e in ET.fromstring(items)]
        if isinstance(items, list):
            out.setdefault("items", []).extend(plain(v) for v in items)
    if props:
        out["props"] = props
    return out


def errors(ps):
    out = []
    for e in ps.streams.error:
        exc = getattr(e, "exception", None)
        out.append(
            {
                "message": getattr(exc, "adapted_properties", {}).get("Message") if exc is not None else None,
                "fq_error": e.fq_error,
                "category": e.category,
                "reason": e.reason,
                "activity": e.activity,
                "category_message": e.message,
            }
        )
    return out


def run(pool, cmdlet, params):
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for k, v in params:
        ps.add_parameter(k, v)
    output = ps.invoke()
    return ps, output


def main():
    url, user, password, case, *args = sys.argv[1:]
    result = {}
    if case == "list":
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps, output = run(pool, "Get-MobileDevice", [("ResultSize", "Unlimited")])
            result = {
                "count": len(output),
                "had_errors": ps.had_errors,
                "first": plain(output[0]) if output else None,
                "last_id": plain(output[-1])["props"]["DeviceId"] if output else None,
                "state": str(ps.state),
            }
    elif case == "select":
        # A listing cut to a few properties on the server, as clients ask Exchange to.
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-MobileDevice").add_parameter("ResultSize", "Unlimited")
            ps.add_cmdlet("Select-Object").add_parameter("Property", args)
            output = ps.invoke()
            result = {
                "count": len(output),
                "had_errors": ps.had_errors,
                "errors": errors(ps),
                "first": plain(output[0]) if output else None,
            }
    elif case == "get-command":
        # Which of the named commands the account's session has (implicit remoting asks so).
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-Command").add_parameter("Name", args)
            output = ps.invoke()
            result = {
                "names": [plain(o)["props"]["Name"] for o in output],
                "types": plain(output[0])["types"] if output else None,
                "errors": errors(ps),
                "state": str(ps.state),
            }
    elif case == "get-casmailbox":
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps, output = run(pool, "Get-CASMailbox", [("Identity", args[0])])
            result = {"objects": [plain(o) for o in output], "errors": errors(ps)}
    elif case == "allow-device":
        mailbox, device = args
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps, _ = run(pool, "Set-CASMailbox", [("Identity", mailbox), ("ActiveSyncAllowedDeviceIDs", {"Add": [device]})])
            set_errors = errors(ps)
            _, output = run(pool, "Get-CASMailbox", [("Identity", mailbox)])
            _, devices = run(pool, "Get-MobileDevice", [("Identity", device)])
            result = {
                "set_errors": set_errors,
                "mailbox": plain(output[0]) if output else None,
                "device": plain(devices[0]) if devices else None,
            }
    elif case == "script":
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps = PowerShell(pool)
            ps.add_script("Get-Process | Select-Object -First 1")
            output = ps.invoke()
            result = {"output": len(output), "had_errors": ps.had_errors, "state": str(ps.state), "errors": errors(ps)}
    elif case == "unknown-parameter":
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps, output = run(pool, "Get-CASMailbox", [("Bogus", "x")])
            result = {"output": len(output), "had_errors": ps.had_errors, "errors": errors(ps)}
    elif case == "not-found":
        with RunspacePool(connect(url, user, password), configuration_name=EXCHANGE) as pool:
            ps, output = run(pool, "Get-CASMailbox", [("Identity", "nobody-here")])
            result = {"output": len(output), "had_errors": ps.had_errors, "errors": errors(ps)}
    elif case in ("wrong-password", "refused"):
        # "refused": the right password, refused for another reason (no channel binding).
        given = password + "x" if case == "wrong-password" else password
        try:
            with RunspacePool(connect(url, user, given), configuration_name=EXCHANGE):
                result = {"opened": True}
        except AuthenticationError as e:
            result = {"opened": False, "error": type(e).__name__, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - under Kerberos the KDC refuses first (pyspnego's error)
            if os.environ.get("PYPSRP_AUTH") != "kerberos":
                raise
            result = {"opened": False, "error": type(e).__name__, "message": str(e)}
    elif case == "shell-limit":
        # Opens shells until the server refuses one; closes one; opens one again.
        limit = int(args[0])
        pools = []
        refused = None
        try:
            for _ in range(limit + 1):
                p = RunspacePool(connect(url, user, password), configuration_name=EXCHANGE)
                try:
                    p.open()
                except WSManFaultError as e:
                    refused = {"code": e.code, "reason": e.reason}
                    break
                pools.append(p)
            opened = len(pools)
            pools.pop().close()
            again = RunspacePool(connect(url, user, password), configuration_name=EXCHANGE)
            again.open()
            pools.append(again)
            result = {"opened": opened, "refused": refused, "reopened": True}
        finally:
            for p in pools:
                p.close()
    else:
        raise SystemExit("unknown case " + case)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
