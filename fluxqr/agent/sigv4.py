"""AWS Signature Version 4 with botocore's own signer: verify a request, sign a forward.

The credential gateway (:mod:`fluxqr.agent.gateway`) receives requests that boto3 signed
with a job's key, checks them the way AWS does, and signs what it forwards with the
site's key. No crypto is written here: both directions run botocore's
:class:`~botocore.auth.SigV4Auth` (``S3SigV4Auth`` for S3, which signs its
``X-Amz-Content-SHA256`` header) on an :class:`~botocore.awsrequest.AWSRequest` rebuilt
from the wire, so the canonical request is exactly what the client's botocore computed.
botocore is imported lazily (only Braket sites need it).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: how far a request's X-Amz-Date may be from now (AWS: 15 minutes)
MAX_SKEW = 15 * 60
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<akid>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request\s*,\s*SignedHeaders=(?P<headers>[a-z0-9;_.-]+)\s*,"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})\s*$")
#: headers never forwarded: the gateway's own signing replaces them, the rest is hop-by-hop
DROP_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token",
                          "x-amz-content-sha256", "host", "content-length", "connection",
                          "keep-alive", "transfer-encoding", "expect", "accept-encoding"})


#: Braket's error type names for the signature errors (S3 answers the plain codes)
BRAKET_ERRORS = {"MissingAuthenticationToken": "MissingAuthenticationTokenException",
                 "InvalidClientTokenId": "UnrecognizedClientException",
                 "SignatureDoesNotMatch": "InvalidSignatureException",
                 "IncompleteSignature": "IncompleteSignatureException",
                 "RequestTimeTooSkewed": "InvalidSignatureException",
                 "XAmzContentSHA256Mismatch": "InvalidSignatureException",
                 "AccessDenied": "AccessDeniedException"}


class SignatureError(Exception):
    """A request AWS would refuse: ``code`` is AWS's error code, ``status`` its HTTP status."""

    def __init__(self, code: str, message: str, status: int = 403):
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Scope:
    """Who signed a request, and for what (from its Authorization header)."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse(headers: Mapping[str, str]) -> Scope:
    """The request's SigV4 scope; :class:`SignatureError` when it has none or a bad one."""
    auth = str(headers.get("Authorization") or "")
    if not auth:
        raise SignatureError("MissingAuthenticationToken", "Missing Authentication Token")
    m = AUTH_RE.match(auth)
    if not m:
        raise SignatureError("IncompleteSignature", "Authorization header is not a SigV4 "
                             "signature", 400)
    names = tuple(m["headers"].split(";"))
    if "host" not in names:
        raise SignatureError("IncompleteSignature", "the Host header must be signed", 400)
    return Scope(m["akid"], m["date"], m["region"], m["service"], names, m["signature"])


def _auth(service: str, access_key: str, secret: str, region: str,
          token: str | None = None) -> Any:
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.credentials import Credentials

    cls = S3SigV4Auth if service == "s3" else SigV4Auth
    return cls(Credentials(access_key, secret, token), service, region)


def verify(method: str, url: str, headers: Mapping[str, str], body: bytes,
           secret_for: Callable[[str], str | None], now: float | None = None) -> Scope:
    """Check a received request's signature; returns its scope, or raises
    :class:`SignatureError` with the code AWS answers (unknown key, bad signature, skew).

    ``url`` is the request as received (scheme, the Host header's authority, and the raw
    path and query); ``secret_for(access_key)`` the secret, None for an unknown key."""
    from botocore.auth import SIGV4_TIMESTAMP
    from botocore.awsrequest import AWSRequest

    scope = parse(headers)
    secret = secret_for(scope.access_key)
    if secret is None:
        raise SignatureError("InvalidClientTokenId" if scope.service != "s3" else
                             "InvalidAccessKeyId", "The security token included in the "
                             "request is invalid.")
    stamp = str(headers.get("X-Amz-Date") or "")
    try:
        when = _dt.datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=_dt.UTC)
    except ValueError:
        raise SignatureError("IncompleteSignature", "X-Amz-Date is missing or malformed",
                             400) from None
    if stamp[:8] != scope.date:
        raise SignatureError("SignatureDoesNotMatch", "credential date is not X-Amz-Date")
    ref = _dt.datetime.now(_dt.UTC).timestamp() if now is None else now
    if abs(when.timestamp() - ref) > MAX_SKEW:
        raise SignatureError("RequestTimeTooSkewed", "Signature expired: the request time "
                             "is too far from the server's time")
    sha = headers.get("X-Amz-Content-SHA256")
    if sha and sha not in ("UNSIGNED-PAYLOAD",) and \
            sha != hashlib.sha256(body or b"").hexdigest():
        raise SignatureError("XAmzContentSHA256Mismatch", "The provided "
                             "'x-amz-content-sha256' header does not match what was computed.",
                             400)
    lower = {k.lower(): v for k, v in headers.items()}
    if any(name not in lower for name in scope.signed_headers):
        raise SignatureError("SignatureDoesNotMatch", "a signed header is missing")
    request = AWSRequest(method=method, url=url, data=body or b"",
                         headers={name: lower[name] for name in scope.signed_headers})
    request.context["timestamp"] = stamp
    auth = _auth(scope.service, scope.access_key, secret, scope.region)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, scope.signature):
        raise SignatureError("SignatureDoesNotMatch", "The request signature we calculated "
                             "does not match the signature you provided.")
    return scope


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, service: str,
         region: str, access_key: str, secret: str, token: str | None = None
         ) -> dict[str, str]:
    """The headers to send ``url`` signed with the given key (the incoming request's
    own signature, date and hop-by-hop headers dropped)."""
    from botocore.awsrequest import AWSRequest

    keep = {k: v for k, v in headers.items() if k.lower() not in DROP_HEADERS}
    request = AWSRequest(method=method, url=url, data=body or b"", headers=keep)
    _auth(service, access_key, secret, region, token).add_auth(request)
    return {k: (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in request.headers.items()}
