"""Microsoft's own Graph SDK against the lab, unmodified.

Signs in with azure-identity's ClientSecretCredential (MSAL underneath: OpenID Connect discovery
of the authority, then the client-credentials token request) and lists every Intune managed
device with msgraph-sdk, following @odata.nextLink. The lab is reached only through the SDKs'
own settings: the credential's authority host, the request adapter's base URL and allowed hosts,
and the CA bundle through REQUESTS_CA_BUNDLE (requests, under azure-identity) and SSL_CERT_FILE
(httpx, under the Graph SDK), which the caller sets.

Usage: msgraph_client.py LOGIN_URL GRAPH_URL TENANT CLIENT_ID CLIENT_SECRET
Prints one JSON object: {"pages": n, "devices": [{"id", "easDeviceId", "complianceState"}, ...]}.
"""

import asyncio
import json
import sys
from urllib.parse import urlparse

from azure.identity import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient


async def list_devices(login: str, graph: str, tenant: str, client_id: str, secret: str) -> dict:
    # The authority is not one of Entra's well-known hosts: MSAL would ask the public instance
    # discovery service about it, so the credential is told the authority is known.
    credential = ClientSecretCredential(
        tenant, client_id, secret, authority=login, disable_instance_discovery=True
    )
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=["https://graph.microsoft.com/.default"],
        allowed_hosts=[urlparse(graph).hostname],
    )
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = graph + "/v1.0"
    client = GraphServiceClient(request_adapter=adapter)

    managed = client.device_management.managed_devices
    page = await managed.get()
    pages, devices = 1, []
    while True:
        for d in page.value or []:
            devices.append(
                {
                    "id": d.id,
                    "easDeviceId": d.eas_device_id,
                    "complianceState": d.compliance_state.value if d.compliance_state else None,
                }
            )
        if not page.odata_next_link:
            break
        page = await managed.with_url(page.odata_next_link).get()
        pages += 1
    credential.close()
    return {"pages": pages, "devices": devices}


def main() -> None:
    login, graph, tenant, client_id, secret = sys.argv[1:6]
    print(json.dumps(asyncio.run(list_devices(login, graph, tenant, client_id, secret))))


if __name__ == "__main__":
    main()
