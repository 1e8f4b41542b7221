"""CloudFront-compatible signed URLs and signed cookies, and their verifier
(:func:`verify_url`, :func:`verify_request`): pure functions, the clock a parameter.

Design: docs/origin.md, "The signature format".
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Query parameters and cookies of the CloudFront signature (Developer Guide, "Signed URLs",
# "Signed cookies").
EXPIRES = "Expires"
POLICY = "Policy"
SIGNATURE = "Signature"
KEY_PAIR_ID = "Key-Pair-Id"
SIGNING_PARAMS = frozenset({EXPIRES, POLICY, SIGNATURE, KEY_PAIR_ID})
COOKIE_EXPIRES = "CloudFront-Expires"
COOKIE_POLICY = "CloudFront-Policy"
COOKIE_SIGNATURE = "CloudFront-Signature"
COOKIE_KEY_PAIR_ID = "CloudFront-Key-Pair-Id"

# CloudFront accepts RSA 2048 public keys in key groups.
KEY_BITS = 2048
# Limits on what a peer may hand the verifier (a policy is a few hundred bytes).
MAX_POLICY_BYTES = 4096
MAX_SIGNATURE_CHARS = 1024

_TO_CLOUDFRONT = str.maketrans({"+": "-", "=": "_", "/": "~"})
_FROM_CLOUDFRONT = str.maketrans({"-": "+", "_": "=", "~": "/"})
_B64_CHARS = re.compile(r"[A-Za-z0-9\-_~]*")


class SigningError(Exception):
    """A key or a policy castway was asked to sign with is unusable."""


class Refusal(StrEnum):
    """Why a signed request is refused."""

    MISSING = "missing"  # no signature at all
    MALFORMED = "malformed"  # parameters present but not decodable / inconsistent
    UNKNOWN_KEY = "unknown-key"  # Key-Pair-Id not in the verifier's key ring
    BAD_SIGNATURE = "bad-signature"  # signature does not match the policy and key
    EXPIRED = "expired"  # now >= DateLessThan
    NOT_YET_VALID = "not-yet-valid"  # now < DateGreaterThan
    WRONG_RESOURCE = "wrong-resource"  # the policy does not cover this URL
    WRONG_IP = "wrong-ip"  # the client address is outside AWS:SourceIp


# --- base64 ---------------------------------------------------------------------------

def cloudfront_b64encode(data: bytes) -> str:
    """Base64 in CloudFront's URL-safe alphabet (``-``, ``_``, ``~``)."""
    return base64.b64encode(data).decode("ascii").translate(_TO_CLOUDFRONT)


def cloudfront_b64decode(text: str) -> bytes:
    """Inverse of :func:`cloudfront_b64encode`; ValueError on anything else."""
    if not _B64_CHARS.fullmatch(text):
        raise ValueError("not CloudFront base64")
    return base64.b64decode(text.translate(_FROM_CLOUDFRONT), validate=True)


# --- keys -----------------------------------------------------------------------------

def generate_private_key_pem(bits: int = KEY_BITS) -> str:
    """A new RSA private key (PKCS#8 PEM), e.g. for ``CASTWAY_SIGNING_KEY``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def _pem_bytes(pem: str | bytes) -> bytes:
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    if "\n" not in text.strip() and "\\n" in text:
        text = text.replace("\\n", "\n")  # a PEM squeezed onto one line of a .env file
    return text.strip().encode("ascii", "replace") + b"\n"


def key_id_for(public_key: rsa.RSAPublicKey) -> str:
    """A stable id for a key that CloudFront did not name (embedded mode): 'K' + 13
    base32 characters of the SHA-256 of the public key, the shape of CloudFront's ids."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = base64.b32encode(hashlib.sha256(der).digest()).decode("ascii")
    return "K" + digest[:13]


def _public_pem(public_key: rsa.RSAPublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo
                                   ).decode("ascii")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The private half: what the origin signs with. ``key_pair_id`` is the id CloudFront
    gave the public key (``AWS::CloudFront::PublicKey``), sent as ``Key-Pair-Id``."""

    key_pair_id: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def from_pem(cls, pem: str | bytes, key_pair_id: str | None = None) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(_pem_bytes(pem), password=None)
        except (ValueError, TypeError) as exc:
            raise SigningError(f"the signing key is not an unencrypted PEM private key: "
                               f"{exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningError("CloudFront signatures need an RSA key")
        return cls(key_pair_id or key_id_for(key.public_key()), key)

    @property
    def public(self) -> VerifyingKey:
        return VerifyingKey(self.key_pair_id, self.private_key.public_key())

    def public_key_pem(self) -> str:
        """The PEM to put in the CloudFront public key (the template's parameter)."""
        return _public_pem(self.private_key.public_key())


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """The public half: what CloudFront's key group holds, and what the origin verifies
    with when no CDN is in front."""

    key_pair_id: str
    public_key: rsa.RSAPublicKey

    @classmethod
    def from_pem(cls, pem: str | bytes, key_pair_id: str | None = None) -> VerifyingKey:
        try:
            key = serialization.load_pem_public_key(_pem_bytes(pem))
        except (ValueError, TypeError) as exc:
            raise SigningError(f"not a PEM public key: {exc}") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise SigningError("CloudFront signatures need an RSA key")
        return cls(key_pair_id or key_id_for(key), key)

    def public_key_pem(self) -> str:
        return _public_pem(self.public_key)


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The public keys a verifier trusts, by Key-Pair-Id (more than one while rotating,
    like a CloudFront key group)."""

    keys: tuple[VerifyingKey, ...]

    @classmethod
    def of(cls, *keys: VerifyingKey | SigningKey) -> KeyRing:
        return cls(tuple(k.public if isinstance(k, SigningKey) else k for k in keys))

    def get(self, key_pair_id: str) -> VerifyingKey | None:
        for key in self.keys:
            if key.key_pair_id == key_pair_id:
                return key
        return None


def public_request_url(public_url: str, path: str, query: str = "") -> str:
    """The URL a request was signed for, when the origin verifies it itself: the public
    base (``Settings.effective_public_url``) + the request's path and raw query."""
    base = public_url.rstrip("/")
    return f"{base}{path}?{query}" if query else f"{base}{path}"


# --- policies -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Policy:
    """One CloudFront policy statement. Times are integer epoch seconds.

    ``resource`` is a URL; in a custom policy it may hold ``*`` (any run of characters,
    including none) and ``?`` (exactly one character). ``resource=None`` (custom policies
    only) means every resource, as in CloudFront.
    """

    resource: str | None
    expires: int
    starts: int | None = None
    source_ip: str | None = None  # CIDR, e.g. "192.0.2.0/24"
    canned: bool = False  # canned: ``resource`` is the exact URL, no wildcards

    def __post_init__(self) -> None:
        if self.canned and (self.resource is None or self.starts is not None
                            or self.source_ip is not None):
            raise SigningError("a canned policy has one exact resource and only an expiry")

    def covers(self, url: str) -> bool:
        """Whether the policy's resource covers ``url`` (exactly for a canned policy,
        with wildcards for a custom one)."""
        return self.resource == url if self.canned else resource_matches(self.resource, url)

    def to_json(self) -> bytes:
        """The policy bytes that get signed, in CloudFront's compact form."""
        condition: dict[str, Any] = {"DateLessThan": {"AWS:EpochTime": self.expires}}
        if self.starts is not None:
            condition["DateGreaterThan"] = {"AWS:EpochTime": self.starts}
        if self.source_ip is not None:
            condition["IpAddress"] = {"AWS:SourceIp": self.source_ip}
        statement: dict[str, Any] = {}
        if self.resource is not None:
            statement["Resource"] = self.resource
        statement["Condition"] = condition
        return json.dumps({"Statement": [statement]}, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Policy:
        """Parse a custom policy; ValueError if it is not one CloudFront would accept."""
        if len(raw) > MAX_POLICY_BYTES:
            raise ValueError("policy too long")
        doc = json.loads(raw)
        statements = doc.get("Statement") if isinstance(doc, dict) else None
        if not isinstance(statements, list) or len(statements) != 1:
            raise ValueError("a policy has exactly one statement")
        statement = statements[0]
        if not isinstance(statement, dict):
            raise ValueError("statement is not an object")
        resource = statement.get("Resource")
        if resource is not None and not isinstance(resource, str):
            raise ValueError("Resource is not a string")
        condition = statement.get("Condition")
        if not isinstance(condition, dict):
            raise ValueError("no Condition")
        expires = _epoch(condition.get("DateLessThan"))
        if expires is None:
            raise ValueError("no DateLessThan")
        starts = _epoch(condition.get("DateGreaterThan"))
        source_ip = None
        if "IpAddress" in condition:
            ip = condition["IpAddress"]
            source_ip = ip.get("AWS:SourceIp") if isinstance(ip, dict) else None
            if not isinstance(source_ip, str):
                raise ValueError("IpAddress without AWS:SourceIp")
            ipaddress.ip_network(source_ip, strict=False)  # ValueError if not a CIDR
        return cls(resource, expires, starts, source_ip)


def _epoch(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("date condition is not an object")
    seconds = value.get("AWS:EpochTime")
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise ValueError("AWS:EpochTime is not an integer")
    return seconds


def canned_policy(resource: str, expires: int) -> Policy:
    return Policy(resource, int(expires), canned=True)


def resource_matches(pattern: str | None, url: str) -> bool:
    """CloudFront's resource matching: ``*`` any run (also empty), ``?`` one character,
    everything else literal and case-sensitive, the whole URL."""
    if pattern is None:
        return True
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch)
                    for ch in pattern)
    return re.fullmatch(regex, url, flags=re.DOTALL) is not None


# --- signing --------------------------------------------------------------------------

def sign_policy(policy_bytes: bytes, key: SigningKey) -> str:
    """RSA-SHA1 (PKCS#1 v1.5) over the policy, CloudFront base64."""
    signature = key.private_key.sign(policy_bytes, padding.PKCS1v15(), hashes.SHA1())
    return cloudfront_b64encode(signature)


def signature_params(policy: Policy, key: SigningKey) -> dict[str, str]:
    """The query parameters of a signed URL, in CloudFront's order."""
    raw = policy.to_json()
    params: dict[str, str] = ({EXPIRES: str(policy.expires)} if policy.canned
                              else {POLICY: cloudfront_b64encode(raw)})
    params[SIGNATURE] = sign_policy(raw, key)
    params[KEY_PAIR_ID] = key.key_pair_id
    return params


def sign_url(url: str, key: SigningKey, *, expires: int, starts: int | None = None,
             source_ip: str | None = None, resource: str | None = None) -> str:
    """``url`` with CloudFront signature parameters appended.

    With only ``expires`` this is a canned policy for exactly ``url``; ``resource`` (which
    may contain wildcards), ``starts`` or ``source_ip`` make it a custom policy (e.g.
    ``resource="https://cdn.example.com/vod/v1/*"`` lets the player append segment names
    to a base it signed once)."""
    if any(name in SIGNING_PARAMS for name, _ in parse_qsl(urlsplit(url).query,
                                                           keep_blank_values=True)):
        raise SigningError("the URL already carries signature parameters")
    if source_ip is not None:
        try:
            ipaddress.ip_network(source_ip, strict=False)
        except ValueError as exc:
            raise SigningError(f"source_ip is not a CIDR: {exc}") from exc
    canned = resource is None and starts is None and source_ip is None
    policy = Policy(url if resource is None else resource, int(expires),
                    None if starts is None else int(starts), source_ip, canned=canned)
    if not canned and not policy.covers(url):
        raise SigningError(f"the resource {resource!r} does not cover {url!r}")
    params = signature_params(policy, key)
    query = "&".join(f"{k}={v}" for k, v in params.items())  # all URL-safe characters
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"


def signed_cookies(policy: Policy, key: SigningKey) -> dict[str, str]:
    """The three ``CloudFront-*`` cookies for ``policy`` (set them with Secure; HttpOnly;
    Path=/ and the distribution's domain)."""
    params = signature_params(policy, key)
    cookies: dict[str, str] = {}
    if EXPIRES in params:
        cookies[COOKIE_EXPIRES] = params[EXPIRES]
    else:
        cookies[COOKIE_POLICY] = params[POLICY]
    cookies[COOKIE_SIGNATURE] = params[SIGNATURE]
    cookies[COOKIE_KEY_PAIR_ID] = params[KEY_PAIR_ID]
    return cookies


# --- verifying ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a verification: ``ok``, else the ``refusal`` and a human reason."""

    ok: bool
    refusal: Refusal | None = None
    reason: str = ""
    policy: Policy | None = None

    def __bool__(self) -> bool:
        return self.ok


def _refuse(refusal: Refusal, reason: str) -> Verdict:
    return Verdict(False, refusal, reason)


def strip_signature(url: str) -> str:
    """The URL a policy must cover: ``url`` without the four signature parameters (the
    other parameters keep their order and encoding)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [item for item in parts.query.split("&")
            if item and item.split("=", 1)[0] not in SIGNING_PARAMS]
    base = url.split("?", 1)[0]
    return f"{base}?{'&'.join(kept)}" if kept else base


def verify_signature(expires: str | None, policy_b64: str | None, signature: str | None,
                     key_pair_id: str | None, url: str, keys: KeyRing, *,
                     now: float | None = None, client_ip: str | None = None) -> Verdict:
    """Check one signature (from query parameters or cookies) for ``url`` (already
    stripped of signature parameters) the way CloudFront does."""
    if expires is None and policy_b64 is None and signature is None and key_pair_id is None:
        return _refuse(Refusal.MISSING, "no signature")
    if signature is None or key_pair_id is None:
        return _refuse(Refusal.MALFORMED, "Signature and Key-Pair-Id are both required")
    if (expires is None) == (policy_b64 is None):
        return _refuse(Refusal.MALFORMED, "exactly one of Expires and Policy is required")
    if len(signature) > MAX_SIGNATURE_CHARS:
        return _refuse(Refusal.MALFORMED, "signature too long")
    key = keys.get(key_pair_id)
    if key is None:
        return _refuse(Refusal.UNKNOWN_KEY, f"unknown Key-Pair-Id {key_pair_id!r}")
    try:
        signature_bytes = cloudfront_b64decode(signature)
        if policy_b64 is not None:
            if len(policy_b64) > MAX_POLICY_BYTES * 4 // 3 + 4:
                raise ValueError("policy too long")
            policy_bytes = cloudfront_b64decode(policy_b64)
            policy = Policy.from_json(policy_bytes)
        else:
            if expires is None or not expires.isdigit() or len(expires) > 12:
                raise ValueError("Expires is not an epoch time")
            policy = canned_policy(url, int(expires))
            policy_bytes = policy.to_json()
    except (ValueError, RecursionError) as exc:
        return _refuse(Refusal.MALFORMED, f"undecodable signature parameters: {exc}")
    try:
        key.public_key.verify(signature_bytes, policy_bytes, padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        return _refuse(Refusal.BAD_SIGNATURE, "the signature does not match the policy")
    now = time.time() if now is None else now
    if now >= policy.expires:
        return _refuse(Refusal.EXPIRED, f"expired at {policy.expires}")
    if policy.starts is not None and now < policy.starts:
        return _refuse(Refusal.NOT_YET_VALID, f"valid from {policy.starts}")
    if not policy.covers(url):
        return _refuse(Refusal.WRONG_RESOURCE, f"the policy covers {policy.resource!r}, "
                       f"not {url!r}")
    if policy.source_ip is not None:
        try:
            inside = (client_ip is not None and ipaddress.ip_address(client_ip)
                      in ipaddress.ip_network(policy.source_ip, strict=False))
        except ValueError:
            inside = False
        if not inside:
            return _refuse(Refusal.WRONG_IP, f"client {client_ip!r} is outside "
                           f"{policy.source_ip}")
    return Verdict(True, policy=policy)


def verify_url(url: str, keys: KeyRing, *, now: float | None = None,
               client_ip: str | None = None) -> Verdict:
    """Verify a signed URL as CloudFront would. ``url`` is the URL the client asked for,
    spelled with the public base the URL was signed for (scheme and host of the CDN or of
    the origin's ``CASTWAY_PUBLIC_URL``)."""
    params = _single_params(urlsplit(url).query)
    if params is None:
        return _refuse(Refusal.MALFORMED, "a signature parameter appears twice")
    return verify_signature(params.get(EXPIRES), params.get(POLICY), params.get(SIGNATURE),
                            params.get(KEY_PAIR_ID), strip_signature(url), keys, now=now,
                            client_ip=client_ip)


def verify_cookies(url: str, cookies: Mapping[str, str], keys: KeyRing, *,
                   now: float | None = None, client_ip: str | None = None) -> Verdict:
    """Verify the ``CloudFront-*`` signed cookies of a request for ``url``."""
    return verify_signature(cookies.get(COOKIE_EXPIRES), cookies.get(COOKIE_POLICY),
                            cookies.get(COOKIE_SIGNATURE), cookies.get(COOKIE_KEY_PAIR_ID),
                            strip_signature(url), keys, now=now, client_ip=client_ip)


def verify_request(url: str, cookies: Mapping[str, str], keys: KeyRing, *,
                   now: float | None = None, client_ip: str | None = None) -> Verdict:
    """A signed URL if the query carries one, else the signed cookies (CloudFront's
    order)."""
    query_names = {name for name, _ in _pairs(urlsplit(url).query)}
    if query_names & SIGNING_PARAMS:
        return verify_url(url, keys, now=now, client_ip=client_ip)
    return verify_cookies(url, cookies, keys, now=now, client_ip=client_ip)


def _pairs(query: str) -> Iterable[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _single_params(query: str) -> dict[str, str] | None:
    """The signature parameters of a query; None if one appears twice."""
    out: dict[str, str] = {}
    for name, value in _pairs(query):
        if name in SIGNING_PARAMS:
            if name in out:
                return None
            out[name] = value
    return out
