"""The door's own identity on this machine: the SSH gate's host key and the web page's TLS
certificate (self-signed, made at first need; ``--cert/--key`` give one's own). Their
fingerprints go on the handout, so a student can check they reached the real door.

Kept in labkit's state folder, ``serve/`` (0700, keys 0600): one identity per machine, shared
by every lab it serves, so a student's ``known_hosts`` stays valid from lab to lab.
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.paths import private_dir, state_dir, write_private


@dataclass(frozen=True)
class Identity:
    host_key: Path
    cert: Path
    key: Path
    ssh_fingerprint: str   # SHA256:... as ssh prints it
    tls_fingerprint: str   # SHA-256 of the certificate, AA:BB:... as browsers show it


def ssh_library() -> Any:
    """asyncssh, imported when the door needs it (0.1 s: not on every labkit command), without
    its warning about DSA, which cryptography deprecates and the door never uses."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*DSA.*")
        import asyncssh
    return asyncssh


def serve_dir() -> Path:
    return private_dir(state_dir() / "serve")


def names_of_this_machine() -> list[str]:
    """Host names and addresses the certificate is made for."""
    out = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    try:
        out.append(socket.getfqdn())
        out += [str(ai[4][0]) for ai in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    return list(dict.fromkeys(n for n in out if n))


def _self_signed(names: list[str]) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n.split("%")[0])))
        except ValueError:
            sans.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[3] if len(names) > 3 else "labkit"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labkit door (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def tls_fingerprint(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    except ValueError as e:
        raise LabkitError(f"not a PEM certificate: {e}") from None
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def identity(cert: str | Path | None = None, key: str | Path | None = None) -> Identity:
    """This machine's door identity, made on first need. ``cert``/``key``: one's own TLS
    certificate and key (PEM) instead of the self-signed one."""
    asyncssh = ssh_library()
    d = serve_dir()
    host_key = d / "ssh_host_ed25519_key"
    if not host_key.exists():
        write_private(host_key, asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    ssh_fp = asyncssh.read_private_key(str(host_key)).get_fingerprint("sha256")
    if (cert is None) != (key is None):
        raise LabkitError("give both --cert and --key (a PEM certificate and its private key), or neither")
    if cert is not None and key is not None:
        cert_path, key_path = Path(cert).resolve(), Path(key).resolve()
        for p in (cert_path, key_path):
            if not p.is_file():
                raise LabkitError(f"{p}: no such file", "--cert and --key name PEM files")
    else:
        cert_path, key_path = d / "tls.crt", d / "tls.key"
        if not cert_path.exists() or not key_path.exists():
            c, k = _self_signed(names_of_this_machine())
            write_private(key_path, k)
            write_private(cert_path, c)
    return Identity(host_key, cert_path, key_path, ssh_fp, tls_fingerprint(cert_path.read_bytes()))
