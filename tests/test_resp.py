"""The lean Redis link of the signal path (`signaling.server.backend.resp`): the
RESP2 parser at any split, its bound, and the link against a real redis-server
over TCP with a password and over a Unix socket."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st

from signaling.server.backend.resp import RedisReplyError, RespLink, RespParser, command

from .conftest import _free_port

replies = st.recursive(
    st.one_of(
        st.binary(max_size=300),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.none(),
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
            max_size=40,
        ).map(RedisReplyError),
    ),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


def encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, RedisReplyError):
        return b"-" + str(value).encode() + b"\r\n"
    return b"*%d\r\n" % len(value) + b"".join(encode(item) for item in value)


def comparable(value: Any) -> Any:
    if isinstance(value, RedisReplyError):
        return ("error", str(value))
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


@given(st.lists(replies, min_size=1, max_size=6), st.lists(st.integers(0, 2000), max_size=8))
def test_replies_parse_back_at_any_split(values: list[Any], cuts: list[int]) -> None:
    wire = b"".join(encode(value) for value in values)
    points = sorted({min(cut, len(wire)) for cut in cuts} | {0, len(wire)})
    parser = RespParser()
    parsed: list[Any] = []
    for start, stop in itertools.pairwise(points):
        parsed += parser.feed(wire[start:stop])
    assert comparable(parsed) == comparable(values)


def test_a_reply_announced_over_the_limit_is_refused_before_it_arrives() -> None:
    parser = RespParser(limit=1000)
    assert parser.feed(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n") == []
    with pytest.raises(RedisReplyError, match="over 1000 bytes"):
        parser.feed(b"$5000\r\nabc")


def test_a_large_reply_in_many_reads_is_parsed_once_it_is_whole() -> None:
    parser = RespParser()
    wire = encode([b"message", b"c", b"x" * 200_000])
    got = [parser.feed(wire[i : i + 1000]) for i in range(0, len(wire), 1000)]
    assert all(piece == [] for piece in got[:-1])
    assert got[-1] == [[b"message", b"c", b"x" * 200_000]]


def test_what_is_not_resp_is_an_error() -> None:
    with pytest.raises(RedisReplyError, match="not RESP2"):
        RespParser().feed(b"HTTP/1.1 400 Bad Request\r\n")


@pytest.fixture
async def redis_with_password(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A redis-server that wants a password, on a TCP port and a Unix socket."""
    assert shutil.which("redis-server"), "redis-server is missing: ./dev test installs it"
    port = _free_port()
    unix = tmp_path / "redis.sock"
    process = await trio.lowlevel.open_process(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret"),
            *("--unixsocket", str(unix), "--unixsocketperm", "700"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(10):
            while True:  # as conftest.RedisServer: nothing announces that it listens
                try:
                    probe = await trio.open_unix_socket(str(unix))
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await probe.aclose()
                break
        yield port, unix
    finally:
        process.kill()
        await process.wait()


@pytest.mark.parametrize("over", ["tcp", "unix"])
async def test_publish_and_subscribe_with_a_password(
    redis_with_password: tuple[int, Path], over: str
) -> None:
    port, unix = redis_with_password
    url = f"redis://:s3cret@127.0.0.1:{port}/0" if over == "tcp" else f"unix://:s3cret@{unix}?db=0"
    subscriber = await RespLink.open(url)
    publisher = await RespLink.open(url)
    try:
        (reply,) = await subscriber.call([command("SUBSCRIBE", "sig:c:test")])
        assert reply == [b"subscribe", b"sig:c:test", 1]
        sent = [command("PUBLISH", "sig:c:test", b"\x00batch %d" % n) for n in range(50)]
        assert await publisher.call(sent) == [1] * 50  # one write, fifty replies
        got: list[Any] = []
        with trio.fail_after(5):
            while len(got) < 50:
                got += await subscriber.receive()
        assert got == [[b"message", b"sig:c:test", b"\x00batch %d" % n] for n in range(50)]
    finally:
        await subscriber.aclose()
        await publisher.aclose()


async def test_a_wrong_password_is_refused_plainly(redis_with_password: tuple[int, Path]) -> None:
    port, _ = redis_with_password
    with pytest.raises(RedisReplyError, match=r"WRONGPASS|invalid password"):
        await RespLink.open(f"redis://:wrong@127.0.0.1:{port}/0")


async def test_abort_wakes_a_waiting_read(redis_with_password: tuple[int, Path]) -> None:
    port, _ = redis_with_password
    link = await RespLink.open(f"redis://:s3cret@127.0.0.1:{port}/0")
    await link.call([command("SUBSCRIBE", "quiet")])

    async def wait_and_abort() -> None:
        await trio.testing.wait_all_tasks_blocked()
        link.abort()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_and_abort)
        with trio.fail_after(5), pytest.raises(trio.ClosedResourceError):
            await link.receive()
    await link.aclose()


async def test_rediss_with_the_urls_own_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = _free_port()
    process = await trio.lowlevel.open_process(
        [
            *("redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(tmp_path / "cert.pem")),
            *("--tls-key-file", str(tmp_path / "key.pem")),
            *("--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "no"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    try:
        with trio.fail_after(10):
            while True:  # as conftest.RedisServer: nothing announces that it listens
                try:
                    link = await RespLink.open(url)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                break
        assert await link.call([command("PUBLISH", "c", b"x")]) == [0]
        await link.aclose()
    finally:
        process.kill()
        await process.wait()
