"""OPC UA test peer for the connector tests (asyncua 2.1).

Usage: opcua_server.py PORT PKI_DIR [USER:PASSWORD]

- Endpoint opc.tcp://localhost:PORT/ (the host name is `localhost` because
  OPC UA clients check the server certificate against the URL's host).
- Security: None, and Basic256Sha256 with SignAndEncrypt. The server's
  self-signed certificate (DNS name `localhost`, application URI
  urn:edgeward:test:opcua-server) is made in PKI_DIR at the first start and
  reused by later starts on the same PKI_DIR, so a client that pins
  PKI_DIR/cert.der keeps trusting a restarted server. Any client
  certificate is accepted.
- Identity: anonymous; with USER:PASSWORD, only that user name and
  password (anonymous and other users are rejected).
- ns=2;s=counter  Int32, +1 every 100 ms, written with an explicit
  SourceTimestamp (the time of the increment); read-only for clients.
- ns=2;s=setpoint Double, writable by clients.

Stdout, one line each, flushed:
  ready opc.tcp://localhost:PORT/          once listening
  write NODEID VALUE STATUS                every client write (after the
                                           server applied it), in order
"""

import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

APP_URI = "urn:edgeward:test:opcua-server"


class OneUser:
    """Accepts exactly one user name and password."""

    def __init__(self, name, password):
        self.name, self.password = name, password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.name and password == self.password:
            return User(role=UserRole.User, name=username)
        return None


def on_write(event, _dispatcher):
    """Prints each client write with the status the server answered."""
    if not event.is_external:
        return  # the server's own writes (counter, server status)
    statuses = event.response_params or []
    for i, node in enumerate(event.request_params.NodesToWrite):
        value = node.Value.Value.Value if node.Value and node.Value.Value else None
        status = statuses[i].name if i < len(statuses) else "?"
        print(f"write {node.NodeId.to_string()} {value!r} {status}", flush=True)


async def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: opcua_server.py PORT PKI_DIR [USER:PASSWORD]")
    port = int(sys.argv[1])
    pki = Path(sys.argv[2])
    pki.mkdir(parents=True, exist_ok=True)
    key, cert = pki / "key.pem", pki / "cert.der"
    await setup_self_signed_certificate(
        key,
        cert,
        APP_URI,
        "localhost",
        [ExtendedKeyUsageOID.SERVER_AUTH],
        {"commonName": "edgeward test opcua server"},
    )

    user = sys.argv[3].split(":", 1) if len(sys.argv) == 4 else None
    server = Server(user_manager=OneUser(*user)) if user else Server()
    await server.init()
    if user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    url = f"opc.tcp://localhost:{port}/"
    server.set_endpoint(url)
    server.set_server_name("edgeward test opcua server")
    await server.set_application_uri(APP_URI)
    server.set_security_policy(
        [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    )
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))

    idx = await server.register_namespace("urn:edgeward:test")
    assert idx == 2, f"namespace index {idx}, the tests expect 2"
    plant = await server.nodes.objects.add_object(idx, "Plant")
    counter = await plant.add_variable(ua.NodeId("counter", idx), "counter", 0, ua.VariantType.Int32)
    setpoint = await plant.add_variable(
        ua.NodeId("setpoint", idx), "setpoint", 0.0, ua.VariantType.Double
    )
    await setpoint.set_writable()
    server.subscribe_server_callback(CallbackType.PostWrite, on_write)

    async with server:
        print(f"ready {url}", flush=True)
        i = 0
        while True:
            await asyncio.sleep(0.1)
            i += 1
            await counter.write_value(
                ua.DataValue(
                    ua.Variant(i, ua.VariantType.Int32),
                    SourceTimestamp=datetime.now(timezone.utc),
                )
            )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
