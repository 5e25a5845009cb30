"""Self-signed certificates for running a SuperLink with TLS on a test site.

A site without its own PKI needs three PEM files: a certificate authority
(``ca.crt``) that every SuperNode trusts through ``--root-certificates``, and
a server certificate (``server.pem``) with its private key (``server.key``)
that the SuperLink presents. The server certificate names every host a
SuperNode may dial in its subject alternative names, so hostname checks pass
for ``localhost``, ``127.0.0.1``, ``::1`` and the extra hosts given.

Run ``python -m metals.tls OUT_DIR --host superlink --host 192.168.1.10``
to write the files for a site.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"


@dataclass(frozen=True)
class SiteCertificates:
    """Paths of the PEM files of one test site.

    Attributes
    ----------
    ca_cert : Path
        CA certificate; SuperNodes pass it as ``--root-certificates`` and the
        SuperLink as ``--ssl-ca-certfile``.
    server_cert : Path
        SuperLink certificate (``--ssl-certfile``), signed by the CA.
    server_key : Path
        Private key of the server certificate (``--ssl-keyfile``), mode 0600.
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_folder(cls, folder: str | Path) -> SiteCertificates:
        """Return the paths the files have inside ``folder`` (they may not exist yet)."""
        folder = Path(folder)
        return cls(folder / CA_FILE, folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE)

    def check(self) -> None:
        """Raise ``FileNotFoundError`` naming the first PEM file that is missing."""
        for path in (self.ca_cert, self.server_cert, self.server_key):
            if not path.is_file():
                raise FileNotFoundError(
                    f"TLS file not found: {path}; create the site certificates with "
                    f"'python -m metals.tls {path.parent}'"
                )


def _subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Turn host names and IP addresses into SAN entries, keeping their order."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by the owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def create_site_certificates(
    folder: str | Path,
    hosts: Sequence[str] = (),
    *,
    valid_days: int = 365,
    overwrite: bool = False,
) -> SiteCertificates:
    """Create a self-signed CA and a SuperLink certificate signed by it.

    Parameters
    ----------
    folder : str | Path
        Output folder; created if missing. Receives ``ca.crt``, ``ca.key``,
        ``server.pem`` and ``server.key``.
    hosts : Sequence[str], default=()
        Host names or IP addresses the SuperNodes use to reach the SuperLink,
        added to ``localhost``, ``127.0.0.1`` and ``::1``.
    valid_days : int, default=365
        Validity of both certificates in days, starting now.
    overwrite : bool, default=False
        Replace existing files. When False, existing files raise.

    Returns
    -------
    SiteCertificates
        Paths of the CA certificate, server certificate and server key.

    Raises
    ------
    FileExistsError
        If a file would be replaced and ``overwrite`` is False.
    ValueError
        If ``valid_days`` is not positive or a host name is empty.
    """
    if valid_days < 1:
        raise ValueError(f"invalid valid_days {valid_days!r}: must be at least 1")
    if any(not host.strip() for host in hosts):
        raise ValueError(f"invalid host list {list(hosts)!r}: host names must not be empty")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = SiteCertificates.in_folder(folder)
    ca_key_path = folder / CA_KEY_FILE
    if not overwrite:
        for path in (paths.ca_cert, ca_key_path, paths.server_cert, paths.server_key):
            if path.exists():
                raise FileExistsError(
                    f"{path} already exists; pass overwrite=True (--overwrite) to replace it"
                )

    now = datetime.datetime.now(datetime.timezone.utc)
    # Backdate a little so a node whose clock runs slightly behind accepts the certificates.
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=valid_days)

    # Certificate authority: self-signed, may sign one level of certificates.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "metals test-site CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    # Server certificate for the SuperLink, valid for every host a SuperNode dials.
    all_hosts = [*DEFAULT_HOSTS, *hosts]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, all_hosts[-1])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(all_hosts)), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    _write_private_key(ca_key_path, ca_key)
    _write_private_key(paths.server_key, server_key)
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    logger.info(
        "Wrote test-site certificates to %s (hosts: %s, valid %d days)",
        folder,
        ", ".join(dict.fromkeys(all_hosts)),
        valid_days,
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    """Write site certificates from the command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m metals.tls",
        description="Create a self-signed CA and a SuperLink certificate for a test site.",
    )
    parser.add_argument("folder", type=Path, help="output folder for the PEM files")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="host name or IP address SuperNodes use for the SuperLink (repeatable)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = create_site_certificates(
            args.folder, args.host, valid_days=args.days, overwrite=args.overwrite
        )
    except (FileExistsError, ValueError) as error:
        parser.error(str(error))
    print(f"CA certificate (give to every SuperNode): {paths.ca_cert}")
    print(f"SuperLink certificate: {paths.server_cert}")
    print(f"SuperLink private key: {paths.server_key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
