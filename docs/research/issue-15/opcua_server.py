"""Minimal asyncua 2.1 server: ns=2;s=counter changes every 200 ms, ns=2;s=setpoint is writable.
Endpoint offers None and Basic256Sha256 SignAndEncrypt with a self-signed certificate."""
import asyncio, sys
from datetime import datetime, timezone
from pathlib import Path
from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

async def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4840
    pki = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/issue15/pki-server")
    pki.mkdir(parents=True, exist_ok=True)
    uri = "urn:issue15:opcua-server"
    key, cert = pki / "key.pem", pki / "cert.der"
    await setup_self_signed_certificate(key, cert, uri, "localhost",
                                        [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "issue15 server"})
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    await server.set_application_uri(uri)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity,
                                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    idx = await server.register_namespace("urn:issue15")
    plant = await server.nodes.objects.add_object(idx, "Plant")
    counter = await plant.add_variable(ua.NodeId("counter", idx), "counter", 0, ua.VariantType.Int32)
    setpoint = await plant.add_variable(ua.NodeId("setpoint", idx), "setpoint", 0.0, ua.VariantType.Double)
    await setpoint.set_writable()
    async with server:
        print(f"opcua server on opc.tcp://127.0.0.1:{port}/ ns={idx}", flush=True)
        i = 0
        while True:
            await asyncio.sleep(0.2)
            i += 1
            await counter.write_value(ua.DataValue(ua.Variant(i, ua.VariantType.Int32),
                                                   SourceTimestamp=datetime.now(timezone.utc)))

asyncio.run(main())
