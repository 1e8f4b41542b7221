"""The publish authorization callback's pure parts: the decision on the platform's answer
(:func:`refusal`), the cache of recent decisions (:class:`AuthCache`) and the client
address of a peer. The real callback, with a real publisher, is tests/test_webhooks.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.protocol.commands import StatusCode
from ingest.publish import Rejection
from ingest.publish_auth import AuthCache, AuthQuery, client_host, refusal

ALICE = AuthQuery("alice", "3f9a0c1b2d4e5f60", "203.0.113.7")
DENIED = Rejection(StatusCode.PUBLISH_DENIED.value,
                   "Publish not authorized by the platform (HTTP 403).")


# --- refusal: the decision ---------------------------------------------------------------

@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_answer_accepts(status: int) -> None:
    assert refusal(status, "") is None


@pytest.mark.parametrize("status", [100, 199, 300, 302, 401, 403, 404, 410, 500, 503])
def test_any_other_answer_refuses_with_publish_denied_and_the_status(status: int) -> None:
    assert refusal(status, "") == Rejection(
        "NetStream.Publish.Denied", f"Publish not authorized by the platform (HTTP {status}).")


def test_no_answer_refuses_with_the_reason_the_publisher_sees() -> None:
    assert refusal(None, "no answer within 2 s") == Rejection(
        "NetStream.Publish.Denied", "Publish not authorized by the platform "
        "(no answer within 2 s).")
    refused = refusal(None, "callback unreachable: ConnectError")
    assert refused is not None and "ConnectError" in refused.description


def test_a_redirect_is_not_followed_and_refuses() -> None:
    # fail closed: a 3xx is not the platform saying yes
    assert refusal(307, "") is not None


@given(st.integers(min_value=100, max_value=599))
def test_the_decision_is_accept_exactly_on_2xx(status: int) -> None:
    assert (refusal(status, "") is None) == (200 <= status < 300)


# --- AuthCache ---------------------------------------------------------------------------

def test_a_decision_is_reused_until_its_ttl_ends() -> None:
    cache = AuthCache(ttl_s=5)
    cache.put(ALICE, None, now=100.0)

    assert cache.get(ALICE, now=100.0) == (True, None)
    assert cache.get(ALICE, now=104.999) == (True, None)
    assert cache.get(ALICE, now=105.0) == (False, None)  # expired: asked again
    assert cache.get(ALICE, now=100.0) == (False, None)  # and forgotten


def test_a_refusal_is_cached_like_an_acceptance() -> None:
    cache = AuthCache(ttl_s=5)
    cache.put(ALICE, DENIED, now=0.0)
    assert cache.get(ALICE, now=1.0) == (True, DENIED)


def test_a_miss_is_told_apart_from_a_cached_acceptance() -> None:
    cache = AuthCache(ttl_s=5)
    assert cache.get(ALICE, now=0.0) == (False, None)
    cache.put(ALICE, None, now=0.0)
    assert cache.get(ALICE, now=0.0) == (True, None)


def test_with_no_ttl_nothing_is_kept_so_a_refusal_takes_effect_at_once() -> None:
    cache = AuthCache(ttl_s=0)
    cache.put(ALICE, None, now=0.0)
    assert cache.get(ALICE, now=0.0) == (False, None)


@pytest.mark.parametrize("other", [
    AuthQuery("bob", ALICE.key_id, ALICE.client_addr),
    AuthQuery(ALICE.channel, "0000000000000000", ALICE.client_addr),
    AuthQuery(ALICE.channel, ALICE.key_id, "198.51.100.1"),
])
def test_a_decision_is_for_one_channel_key_and_client_address(other: AuthQuery) -> None:
    cache = AuthCache(ttl_s=60)
    cache.put(ALICE, DENIED, now=0.0)
    assert cache.get(other, now=1.0) == (False, None)


def test_a_new_decision_replaces_the_old_one_with_a_fresh_ttl() -> None:
    cache = AuthCache(ttl_s=10)
    cache.put(ALICE, DENIED, now=0.0)
    cache.put(ALICE, None, now=8.0)
    assert cache.get(ALICE, now=15.0) == (True, None)


def test_the_cache_is_bounded_and_drops_the_oldest_put_first() -> None:
    cache = AuthCache(ttl_s=60, size=3)
    queries = [AuthQuery("alice", f"{n:016x}", "203.0.113.7") for n in range(4)]
    for n, query in enumerate(queries[:3]):
        cache.put(query, None, now=float(n))
    cache.put(queries[0], None, now=3.0)  # refreshed: now the newest

    cache.put(queries[3], None, now=4.0)

    assert cache.get(queries[1], now=5.0) == (False, None)  # the oldest, dropped
    assert all(cache.get(q, now=5.0) == (True, None)
               for q in (queries[0], queries[2], queries[3]))


@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), max_size=200))
def test_the_cache_never_holds_more_than_its_size(puts: list[tuple[int, bool]]) -> None:
    cache = AuthCache(ttl_s=60, size=8)
    for n, allowed in puts:
        cache.put(AuthQuery("c", f"{n:016x}", "203.0.113.7"),
                  None if allowed else DENIED, now=0.0)
    held = sum(cache.get(AuthQuery("c", f"{n:016x}", "203.0.113.7"), now=1.0)[0]
               for n in range(21))
    assert held == min(8, len({n for n, _ in puts}))


# --- the client address ------------------------------------------------------------------

@pytest.mark.parametrize(("peer", "host"), [
    ("203.0.113.7:51234", "203.0.113.7"),
    ("[2001:db8::1]:51234", "2001:db8::1"),
    ("203.0.113.7", "203.0.113.7"),
])
def test_the_client_address_is_the_peer_without_its_port(peer: str, host: str) -> None:
    assert client_host(peer) == host
