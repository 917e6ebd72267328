# make_certs.py
"""Certificates for trying TLS: a CA, a server certificate for localhost and
127.0.0.1, a client certificate for "alice" (PEM files here).  For tests and
demos: a real deployment's certificates come from its own PKI."""

from txgeerpc.testing import CertificateAuthority

ca = CertificateAuthority("demo CA")
ca.write_cert("ca.crt")
ca.issue_server(["localhost", "127.0.0.1"]).write(".", "server")  # server.crt, server.key
ca.issue_client("alice").write(".", "alice")  # alice.crt, alice.key
