"""castway.signing: CloudFront signed URLs and cookies, and the origin's verifier.

botocore's CloudFrontSigner is an independent implementation of the same format: our
canned URLs must equal its URLs byte for byte, and our verifier must accept what it signs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from castway.signing import (
    COOKIE_EXPIRES,
    COOKIE_KEY_PAIR_ID,
    COOKIE_POLICY,
    COOKIE_SIGNATURE,
    KeyRing,
    Policy,
    Refusal,
    SigningError,
    SigningKey,
    VerifyingKey,
    canned_policy,
    cloudfront_b64decode,
    cloudfront_b64encode,
    generate_private_key_pem,
    key_id_for,
    public_request_url,
    resource_matches,
    sign_url,
    signed_cookies,
    strip_signature,
    verify_cookies,
    verify_request,
    verify_url,
)

NOW = 1_800_000_000
LATER = NOW + 3600
BASE = "https://d111111abcdef8.cloudfront.net"
URL = f"{BASE}/vod/v1/master.m3u8"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.from_pem(generate_private_key_pem(), "K2JCJMDEHXQW5F")


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    return SigningKey.from_pem(generate_private_key_pem(), "K2JCJMDEHXQW5F")


@pytest.fixture(scope="module")
def ring(key: SigningKey) -> KeyRing:
    return KeyRing.of(VerifyingKey.from_pem(key.public_key_pem(), key.key_pair_id))


def _botocore_signer(key: SigningKey) -> CloudFrontSigner:
    def rsa_signer(message: bytes) -> bytes:
        return key.private_key.sign(message, padding.PKCS1v15(), hashes.SHA1())

    return CloudFrontSigner(key.key_pair_id, rsa_signer)


# --- encoding -------------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"\xfb\xff\xfe", b"\x00" * 7, bytes(range(256))])
def test_base64_uses_cloudfronts_url_safe_alphabet(data: bytes) -> None:
    text = cloudfront_b64encode(data)
    assert not set(text) & set("+=/")
    assert cloudfront_b64decode(text) == data


@pytest.mark.parametrize("text", ["ab+c", "a b", "a/b=", "%%%"])
def test_base64_decoder_refuses_the_standard_alphabet(text: str) -> None:
    with pytest.raises(ValueError):
        cloudfront_b64decode(text)


def test_canned_policy_json_is_cloudfronts_compact_form() -> None:
    assert canned_policy(URL, LATER).to_json() == (
        '{"Statement":[{"Resource":"' + URL + '","Condition":{"DateLessThan":'
        '{"AWS:EpochTime":' + str(LATER) + "}}}]}").encode()


# --- signing agrees with botocore -------------------------------------------------------

def test_canned_url_is_byte_identical_to_botocores(key: SigningKey) -> None:
    ours = sign_url(URL, key, expires=LATER)
    theirs = _botocore_signer(key).generate_presigned_url(
        URL, date_less_than=datetime.fromtimestamp(LATER, UTC))
    assert ours == theirs
    query = parse_qs(urlsplit(ours).query)
    assert set(query) == {"Expires", "Signature", "Key-Pair-Id"}
    assert query["Key-Pair-Id"] == ["K2JCJMDEHXQW5F"]


def test_custom_policy_signed_by_botocore_verifies(key: SigningKey, ring: KeyRing) -> None:
    signer = _botocore_signer(key)
    policy = signer.build_policy(f"{BASE}/vod/v1/*",
                                 date_less_than=datetime.fromtimestamp(LATER, UTC),
                                 date_greater_than=datetime.fromtimestamp(NOW - 60, UTC),
                                 ip_address="192.0.2.0/24")
    url = signer.generate_presigned_url(f"{BASE}/vod/v1/720p/3.m4s", policy=policy)
    assert verify_url(url, ring, now=NOW, client_ip="192.0.2.7").ok
    assert verify_url(url, ring, now=NOW, client_ip="198.51.100.1").refusal is Refusal.WRONG_IP


def test_canned_url_signed_by_botocore_verifies(key: SigningKey, ring: KeyRing) -> None:
    url = _botocore_signer(key).generate_presigned_url(
        URL, date_less_than=datetime.fromtimestamp(LATER, UTC))
    assert verify_url(url, ring, now=NOW).ok


# --- verification ------------------------------------------------------------------------

def test_valid_canned_url_is_accepted(key: SigningKey, ring: KeyRing) -> None:
    verdict = verify_url(sign_url(URL, key, expires=LATER), ring, now=NOW)
    assert verdict.ok and verdict.refusal is None
    assert verdict.policy is not None and verdict.policy.expires == LATER


def test_url_with_its_own_query_keeps_it_covered(key: SigningKey, ring: KeyRing) -> None:
    url = f"{BASE}/hls/alice/master.m3u8?ll=0"
    signed = sign_url(url, key, expires=LATER)
    assert signed.startswith(url + "&Expires=")
    assert strip_signature(signed) == url
    assert verify_url(signed, ring, now=NOW).ok
    swapped = signed.replace("ll=0", "ll=1")
    assert verify_url(swapped, ring, now=NOW).refusal is Refusal.BAD_SIGNATURE


def test_wildcard_policy_covers_the_files_under_it(key: SigningKey, ring: KeyRing) -> None:
    resource = f"{BASE}/vod/v1/*"
    signed = sign_url(f"{BASE}/vod/v1/master.m3u8", key, expires=LATER, resource=resource)
    assert "Policy=" in signed and "Expires=" not in signed
    query = signed.split("?", 1)[1]
    assert verify_url(f"{BASE}/vod/v1/720p/12.m4s?{query}", ring, now=NOW).ok
    other = verify_url(f"{BASE}/vod/v2/720p/12.m4s?{query}", ring, now=NOW)
    assert other.refusal is Refusal.WRONG_RESOURCE and "vod/v2" in other.reason


@pytest.mark.parametrize(("pattern", "url", "matches"), [
    ("https://a/vod/*", "https://a/vod/x/1.m4s", True),
    ("https://a/vod/*", "https://a/vod/", True),  # * also matches nothing
    ("https://a/vod/*", "https://a/vodka", False),
    ("https://a/vod/?.m4s", "https://a/vod/1.m4s", True),
    ("https://a/vod/?.m4s", "https://a/vod/12.m4s", False),  # ? is exactly one
    ("https://a/VOD/*", "https://a/vod/1.m4s", False),  # case-sensitive
    ("http*://a/*", "http://a/x", True),
    ("https://a/x.m3u8", "https://a/x.m3u8?y", False),  # whole URL
    ("https://a/(.*)[x]", "https://a/(.*)[x]", True),  # regex characters are literal
    ("https://a/(.*)[x]", "https://a/zzzzzx", False),
    (None, "https://anything/at/all", True),  # a custom policy without a resource
])
def test_resource_matching_follows_cloudfronts_rules(pattern: str | None, url: str,
                                                     matches: bool) -> None:
    assert resource_matches(pattern, url) is matches


def test_expired_is_refused(key: SigningKey, ring: KeyRing) -> None:
    signed = sign_url(URL, key, expires=LATER)
    assert verify_url(signed, ring, now=LATER - 1).ok
    verdict = verify_url(signed, ring, now=LATER)  # DateLessThan: now must be before
    assert verdict.refusal is Refusal.EXPIRED and not verdict


def test_not_yet_valid_is_refused(key: SigningKey, ring: KeyRing) -> None:
    signed = sign_url(URL, key, expires=LATER, starts=NOW + 60)
    assert verify_url(signed, ring, now=NOW).refusal is Refusal.NOT_YET_VALID
    assert verify_url(signed, ring, now=NOW + 61).ok


@pytest.mark.parametrize("tamper", [
    lambda u: u.replace("/vod/v1/", "/vod/v2/"),  # another VOD
    lambda u: u.replace(f"Expires={LATER}", f"Expires={LATER + 86400}"),  # longer life
    lambda u: u[:-40] + ("A" if u[-40] != "A" else "B") + u[-39:],  # flipped sig char
])
def test_tampered_canned_url_is_refused(key: SigningKey, ring: KeyRing,
                                        tamper: Callable[[str], str]) -> None:
    signed = sign_url(URL, key, expires=LATER)
    tampered = tamper(signed)
    assert tampered != signed
    verdict = verify_url(tampered, ring, now=NOW)
    assert not verdict.ok
    assert verdict.refusal in (Refusal.BAD_SIGNATURE, Refusal.MALFORMED)


def test_tampered_policy_is_refused(key: SigningKey, ring: KeyRing) -> None:
    signed = sign_url(URL, key, expires=LATER, resource=f"{BASE}/vod/v1/*")
    query = parse_qs(urlsplit(signed).query)
    policy = json.loads(cloudfront_b64decode(query["Policy"][0]))
    policy["Statement"][0]["Resource"] = f"{BASE}/*"  # widen it
    forged = cloudfront_b64encode(json.dumps(policy, separators=(",", ":")).encode())
    tampered = signed.replace(query["Policy"][0], forged)
    assert verify_url(tampered, ring, now=NOW).refusal is Refusal.BAD_SIGNATURE


def test_wrong_key_is_refused(key: SigningKey, other_key: SigningKey, ring: KeyRing) -> None:
    forged = sign_url(URL, other_key, expires=LATER)  # same Key-Pair-Id, other key
    assert verify_url(forged, ring, now=NOW).refusal is Refusal.BAD_SIGNATURE
    renamed = SigningKey("KOTHER", other_key.private_key)
    verdict = verify_url(sign_url(URL, renamed, expires=LATER), ring, now=NOW)
    assert verdict.refusal is Refusal.UNKNOWN_KEY and "KOTHER" in verdict.reason


def test_key_ring_accepts_every_key_while_rotating(key: SigningKey,
                                                   other_key: SigningKey) -> None:
    rotated = SigningKey("KNEW", other_key.private_key)
    ring = KeyRing.of(key, rotated)
    assert verify_url(sign_url(URL, key, expires=LATER), ring, now=NOW).ok
    assert verify_url(sign_url(URL, rotated, expires=LATER), ring, now=NOW).ok


@pytest.mark.parametrize(("query", "refusal"), [
    ("", Refusal.MISSING),
    ("?Expires=1", Refusal.MALFORMED),  # no Signature / Key-Pair-Id
    (f"?Expires={LATER}&Policy=e30_&Signature=AA__&Key-Pair-Id=K2JCJMDEHXQW5F",
     Refusal.MALFORMED),  # both Expires and Policy
    ("?Signature=AA__&Key-Pair-Id=K2JCJMDEHXQW5F", Refusal.MALFORMED),  # neither
    ("?Expires=soon&Signature=AA__&Key-Pair-Id=K2JCJMDEHXQW5F", Refusal.MALFORMED),
    (f"?Expires={LATER}&Signature=not+b64&Key-Pair-Id=K2JCJMDEHXQW5F", Refusal.MALFORMED),
    ("?Policy=bm90IGpzb24_&Signature=AA__&Key-Pair-Id=K2JCJMDEHXQW5F", Refusal.MALFORMED),
    (f"?Expires={LATER}&Expires={LATER}&Signature=AA__&Key-Pair-Id=K2JCJMDEHXQW5F",
     Refusal.MALFORMED),  # a parameter twice
    (f"?Expires={LATER}&Signature=AA__&Key-Pair-Id=K2JCJMDEHXQW5F", Refusal.BAD_SIGNATURE),
    (f"?Expires={LATER}&Signature=AA__&Key-Pair-Id=KNOPE", Refusal.UNKNOWN_KEY),
])
def test_malformed_signatures_are_refused_with_a_reason(ring: KeyRing, query: str,
                                                        refusal: Refusal) -> None:
    verdict = verify_url(URL + query, ring, now=NOW)
    assert verdict.refusal is refusal
    assert verdict.reason


@pytest.mark.parametrize("policy", [
    {"Statement": []},
    {"Statement": [{"Resource": "x", "Condition": {"DateLessThan": {"AWS:EpochTime": 1}}}] * 2},
    {"Statement": [{"Resource": "x", "Condition": {}}]},
    {"Statement": [{"Resource": "x", "Condition": {"DateLessThan": {"AWS:EpochTime": "1"}}}]},
    {"Statement": [{"Resource": 7, "Condition": {"DateLessThan": {"AWS:EpochTime": 1}}}]},
    {"Statement": [{"Resource": "x", "Condition": {"DateLessThan": {"AWS:EpochTime": 1},
                                                   "IpAddress": {"AWS:SourceIp": "nope"}}}]},
    [],
])
def test_policy_parser_refuses_what_cloudfront_would(policy: object) -> None:
    with pytest.raises(ValueError):
        Policy.from_json(json.dumps(policy).encode())


def test_deeply_nested_policy_is_malformed_not_a_crash(key: SigningKey, ring: KeyRing) -> None:
    raw = b"[" * 3000 + b"]" * 3000
    query = (f"?Policy={cloudfront_b64encode(raw[:4000])}&Signature=AA__"
             f"&Key-Pair-Id={key.key_pair_id}")
    assert verify_url(URL + query, ring, now=NOW).refusal is Refusal.MALFORMED


# --- cookies ------------------------------------------------------------------------------

def test_canned_cookie_trio(key: SigningKey, ring: KeyRing) -> None:
    cookies = signed_cookies(canned_policy(URL, LATER), key)
    assert set(cookies) == {COOKIE_EXPIRES, COOKIE_SIGNATURE, COOKIE_KEY_PAIR_ID}
    assert verify_cookies(URL, cookies, ring, now=NOW).ok
    assert verify_cookies(f"{BASE}/vod/v2/master.m3u8", cookies, ring,
                          now=NOW).refusal is Refusal.BAD_SIGNATURE


def test_custom_cookie_trio_covers_a_whole_vod(key: SigningKey, ring: KeyRing) -> None:
    cookies = signed_cookies(Policy(f"{BASE}/vod/v1/*", LATER), key)
    assert set(cookies) == {COOKIE_POLICY, COOKIE_SIGNATURE, COOKIE_KEY_PAIR_ID}
    assert verify_cookies(f"{BASE}/vod/v1/720p/0.m4s", cookies, ring, now=NOW).ok
    assert verify_cookies(f"{BASE}/vod/v1/720p/0.m4s", cookies, ring,
                          now=LATER).refusal is Refusal.EXPIRED
    assert verify_cookies(f"{BASE}/vod/v9/720p/0.m4s", cookies, ring,
                          now=NOW).refusal is Refusal.WRONG_RESOURCE
    assert verify_cookies(URL, {}, ring, now=NOW).refusal is Refusal.MISSING


def test_request_prefers_the_signed_url_over_cookies(key: SigningKey, ring: KeyRing) -> None:
    good_cookies = signed_cookies(Policy(f"{BASE}/*", LATER), key)
    expired_url = sign_url(URL, key, expires=NOW - 1)
    assert verify_request(expired_url, good_cookies, ring, now=NOW).refusal is Refusal.EXPIRED
    assert verify_request(URL, good_cookies, ring, now=NOW).ok
    assert verify_request(URL, {}, ring, now=NOW).refusal is Refusal.MISSING


# --- keys and signer input ------------------------------------------------------------------

def test_pem_on_one_line_of_an_env_file_loads(key: SigningKey) -> None:
    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    loaded = SigningKey.from_pem(pem.replace("\n", "\\n"), key.key_pair_id)
    assert loaded.public_key_pem() == key.public_key_pem()


def test_key_id_defaults_to_a_stable_cloudfront_shaped_id(key: SigningKey) -> None:
    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    a, b = SigningKey.from_pem(pem), SigningKey.from_pem(pem)
    assert a.key_pair_id == b.key_pair_id == key_id_for(key.private_key.public_key())
    assert a.key_pair_id.startswith("K") and len(a.key_pair_id) == 14
    assert VerifyingKey.from_pem(a.public_key_pem()).key_pair_id == a.key_pair_id


def test_unusable_keys_are_refused() -> None:
    with pytest.raises(SigningError):
        SigningKey.from_pem("not a key")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(SigningError, match="RSA"):
        SigningKey.from_pem(ec_pem)
    with pytest.raises(SigningError):
        VerifyingKey.from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")


def test_signer_refuses_what_could_never_verify(key: SigningKey) -> None:
    with pytest.raises(SigningError, match="already"):
        sign_url(sign_url(URL, key, expires=LATER), key, expires=LATER)
    with pytest.raises(SigningError, match="does not cover"):
        sign_url(URL, key, expires=LATER, resource=f"{BASE}/other/*")
    with pytest.raises(SigningError, match="CIDR"):
        sign_url(URL, key, expires=LATER, source_ip="somewhere")
    with pytest.raises(SigningError, match="canned"):
        Policy(None, LATER, canned=True)


# --- the origin's key and URLs ---------------------------------------------------------------

def test_origin_rebuilds_the_signed_url_from_its_public_base(key: SigningKey,
                                                             ring: KeyRing) -> None:
    signed = sign_url(f"{BASE}/vod/v1/master.m3u8", key, expires=LATER)
    query = signed.split("?", 1)[1]
    assert public_request_url(BASE + "/", "/vod/v1/master.m3u8", query) == signed
    assert public_request_url(BASE, "/vod/v1/master.m3u8") == URL
    assert verify_url(public_request_url(BASE, "/vod/v1/master.m3u8", query), ring,
                      now=NOW).ok
