"""TLS certificates for the test mail servers (Dovecot, the SMTP capture), so the email
channel's tests speak real TLS and really verify the server's certificate.

A throw-away certificate authority signs one server certificate valid for `localhost` and
`127.0.0.1`; a client trusts it through `cafile` (`client_context()`), exactly as Axi would
trust a private CA, without ever turning verification off. The files come from the
`openssl` command line tool (the `cryptography` package is not a dependency of the
project), with P-256 keys: generating them takes a few milliseconds.

`shared_tls()` is one set per test process (in a temporary directory removed at exit);
`make_tls_files(directory)` writes a fresh set wherever a server needs its own copy.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOSTNAMES = ("localhost",)
DEFAULT_IPS = ("127.0.0.1",)
VALID_DAYS = 7


@dataclass(frozen=True)
class TlsFiles:
    cafile: Path
    """The CA certificate a client trusts (PEM)."""
    certfile: Path
    """The server's certificate (PEM), signed by the CA."""
    keyfile: Path
    """The server's private key (PEM, unencrypted)."""

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname checked) that trusts only this CA."""
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.cafile))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.certfile), str(self.keyfile))
        return context

    def copy_to(self, directory: Path) -> TlsFiles:
        """The same files copied into `directory` (e.g. for a server running as another user)."""
        directory.mkdir(parents=True, exist_ok=True)
        copies = [directory / p.name for p in (self.cafile, self.certfile, self.keyfile)]
        for source, target in zip((self.cafile, self.certfile, self.keyfile), copies, strict=True):
            shutil.copyfile(source, target)
        return TlsFiles(*copies)


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the `openssl` command is needed to make the test certificates")
    done = subprocess.run([openssl, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-2000:]}")


def make_tls_files(directory: Path, hostnames: tuple[str, ...] = DEFAULT_HOSTNAMES,
                   ips: tuple[str, ...] = DEFAULT_IPS) -> TlsFiles:
    """A new CA and a server certificate for `hostnames` and `ips`, written to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca-key.pem", directory / "ca.pem"
    key, csr, cert = directory / "server-key.pem", directory / "server.csr", directory / "server.pem"
    ext = directory / "server-ext.cnf"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca_cert, "-days", str(VALID_DAYS),
             "-subj", "/CN=Axi test mail CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={hostnames[0]}")
    names = [f"DNS:{h}" for h in hostnames] + [f"IP:{ip}" for ip in ips]
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(names)}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", str(VALID_DAYS), "-extfile", ext)
    return TlsFiles(cafile=ca_cert, certfile=cert, keyfile=key)


@functools.cache
def shared_tls() -> TlsFiles:
    """One CA and server certificate for the whole test process."""
    directory = Path(tempfile.mkdtemp(prefix="axi-mail-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return make_tls_files(directory)
