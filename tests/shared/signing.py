"""A signing key for the tests of strict token verification (no emulator configured).

Identity Platform signs its ID tokens and blocking-function JWTs with RS256 keys published as
``{kid: x509 PEM}`` at a certs URL. The Firebase Auth emulator signs nothing, so the tests of
the production path need a key of their own: ``SigningKey`` serves its certificate in Google's
format on 127.0.0.1 and signs tokens with any claims, so a test can make a valid token, then an
expired one, one for another audience, or one of a key the certs URL does not list (forged).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ISSUER_PREFIX = "https://securetoken.google.com/"


class _CertsHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        key: SigningKey = self.server.owner  # type: ignore[attr-defined]
        data = json.dumps({key.kid: key.cert_pem}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class SigningKey:
    """An RS256 key and its certs URL (``serve=False``: a key nobody publishes, for forgeries)."""

    def __init__(self, project: str, *, serve: bool = True) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.project = project
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gemcast-test-securetoken")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=2)).sign(key, hashes.SHA256()))
        self.kid = uuid.uuid4().hex
        self._private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self._httpd: ThreadingHTTPServer | None = None
        if serve:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _CertsHandler)
            self._httpd.daemon_threads = True
            self._httpd.owner = self  # type: ignore[attr-defined]
            threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def certs_url(self) -> str:
        assert self._httpd is not None, "this key is not published"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/certs"

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def sign(self, payload: Mapping[str, Any]) -> str:
        from google.auth import crypt, jwt

        signer = crypt.RSASigner.from_string(self._private_pem, key_id=self.kid)
        return jwt.encode(signer, dict(payload)).decode()

    def id_token(self, sub: str, *, audience: str | None = None, ttl_s: int = 3600,
                 now: float | None = None) -> str:
        """An ID token shaped like Identity Platform's (iss and aud name the project)."""
        moment = int(time.time() if now is None else now)
        return self.sign({"iss": ISSUER_PREFIX + self.project, "aud": audience or self.project, "sub": sub,
                          "user_id": sub, "iat": moment, "auth_time": moment, "exp": moment + ttl_s,
                          "firebase": {"sign_in_provider": "password", "identities": {}}})

    def blocking_token(self, event_type: str, user_record: Mapping[str, Any], *,
                       audience: str = "https://gemcast-blocking-abc123-ew.a.run.app", ttl_s: int = 300) -> str:
        """The JWT Identity Platform posts to a blocking function as ``{"data": {"jwt": ...}}``."""
        moment = int(time.time())
        return self.sign({"iss": ISSUER_PREFIX + self.project, "aud": audience, "sub": user_record["uid"],
                          "iat": moment, "exp": moment + ttl_s, "event_id": uuid.uuid4().hex,
                          "event_type": event_type, "user_record": dict(user_record)})
