"""castway.net: the accept loop out of descriptors (a real EMFILE, in a child process
whose descriptor table is filled), the connection budget, the rate-limited log."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap

import pytest

from castway.net import ConnectionBudget, RateLimitedLog, raise_fd_limit

CLIENTS = 20

CHILD = textwrap.dedent(f"""
    import asyncio, logging, os, resource, sys
    from castway.net import Listener, bind_socket
    from castway.logs import configure_logging

    configure_logging("WARNING", True)

    async def main() -> None:
        sock = bind_socket("127.0.0.1", 0)
        accepted = []

        async def handle(conn, peer):
            conn.send(b"hi")
            conn.close()
            accepted.append(peer)

        listener = Listener(sock, "test", handle).start()
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        filler = []
        try:
            while True:
                filler.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        print(sock.getsockname()[1], flush=True)
        while listener.accept_errors.total < 6:  # out of descriptors for a while
            await asyncio.sleep(0.01)
        for fd in filler:
            os.close(fd)
        while len(accepted) < {CLIENTS}:
            await asyncio.sleep(0.01)
        print("failures", listener.accept_errors.total, flush=True)
        listener.close()

    asyncio.run(main())
""")


def test_accept_backs_off_and_logs_rarely_while_out_of_descriptors() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=20)
                   for _ in range(CLIENTS)]
        for client in clients:  # all served once descriptors are back
            assert client.recv(2) == b"hi"
        out, err = proc.communicate(timeout=30)
    finally:
        for client in clients:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    failures = int(out.split()[-1])
    # exponential back-off: a handful of attempts, not a spin (asyncio's own loop logs
    # one line per backlog slot per readiness, thousands a second)
    assert 6 <= failures <= 12, failures
    lines = [line for line in err.splitlines() if "accept() failed" in line]
    assert 1 <= len(lines) <= 2, lines  # the first failure, then the recovery's count
    assert "EMFILE" in lines[0]


def test_rate_limited_log_counts_instead_of_repeating(
        caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), "it failed", 60.0)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for _ in range(1000):
            log.note("boom")
        log.flush("over")
    assert [r.count for r in caplog.records] == [1, 999]  # type: ignore[attr-defined]
    assert log.total == 1000


def test_the_budget_is_a_share_of_the_descriptor_limit() -> None:
    budget = ConnectionBudget.from_limit(fds=1024)
    assert budget.http + budget.rtmp == 512
    assert budget.rtmp == 64
    assert ConnectionBudget.from_limit(100) == ConnectionBudget(http=88, rtmp=12)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    code = ("import resource; from castway.net import raise_fd_limit;"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE);"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard));"
            "print(raise_fd_limit() == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout.strip() == "True", result.stderr
    assert raise_fd_limit() > 0
