"""Test certificates made with the openssl command: a CA and one certificate it signed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["CA_NAME", "make_pki"]

CA_NAME = "inferno-test-ca"


def make_pki(directory: Path, subject: str, ip: str | None = None) -> dict[str, Path]:
    """``ca``, ``ca_key``, ``cert`` and ``key`` (PEM files in ``directory``): the certificate is
    ``subject``'s, with ``ip`` as its subject alternative name when given (a server's)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    files = {k: directory / f"{k}.pem" for k in ("ca", "ca_key", "cert", "key", "csr")}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        f"/CN={CA_NAME}", "-keyout", str(files["ca_key"]), "-out", str(files["ca"]))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={subject}",
        "-keyout", str(files["key"]), "-out", str(files["csr"]))
    extensions: tuple[str, ...] = ()
    if ip is not None:
        ext = directory / "san.ext"
        ext.write_text(f"subjectAltName=IP:{ip}\n")
        extensions = ("-extfile", str(ext))
    run("x509", "-req", "-in", str(files["csr"]), "-CA", str(files["ca"]), "-CAkey",
        str(files["ca_key"]), "-CAcreateserial", "-days", "2", *extensions,
        "-out", str(files["cert"]))
    return files
