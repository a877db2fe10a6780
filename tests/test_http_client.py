"""The OpenAI teacher's HTTP client: keep-alive reuse, and no reuse of a connection the server closed."""

from __future__ import annotations

import asyncio
import gc
import socket

import anyio
import pytest

from factory.commands.generate import GC_YOUNG_THRESHOLD, lean_gc
from factory.teachers.http_client import _Readable, make_http_client

REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class KeepAliveServer:
    """Answers each request on a keep-alive connection, optionally closing it soon after the reply."""

    def __init__(self, close_after: float | None):
        self.close_after = close_after
        self.connections = 0
        self.requests = 0
        self.closed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                writer.write(REPLY)
                await writer.drain()
                if self.close_after is not None:
                    # Close an idle keep-alive connection without saying so (as servers do on their
                    # idle timeout): the client must notice before it sends on it again.
                    await asyncio.sleep(self.close_after)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()
        await writer.wait_closed()
        self.closed += 1


async def _two_requests(close_after: float | None) -> KeepAliveServer:
    server = KeepAliveServer(close_after)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = make_http_client(timeout=5.0)
    try:
        for _ in range(2):
            response = await client.get(f"http://127.0.0.1:{port}/v1/models")
            assert response.status_code == 200 and response.json() == {}
            await anyio.sleep(0.2)
    finally:
        await client.aclose()
        with anyio.fail_after(5):
            while server.closed < server.connections:  # let the handlers see the client's close
                await anyio.sleep(0.01)
        listener.close()
        await listener.wait_closed()
    return server


@pytest.mark.parametrize("backend", ["asyncio", "uvloop"])
def test_an_open_connection_is_reused(backend: str) -> None:
    options = {"use_uvloop": backend == "uvloop"}
    server = anyio.run(_two_requests, None, backend="asyncio", backend_options=options)
    assert (server.connections, server.requests) == (1, 2)


@pytest.mark.parametrize("backend", ["asyncio", "uvloop"])
def test_a_connection_the_server_closed_is_not_reused(backend: str) -> None:
    options = {"use_uvloop": backend == "uvloop"}
    server = anyio.run(_two_requests, 0.05, backend="asyncio", backend_options=options)
    assert (server.connections, server.requests) == (2, 2)


def test_readable_sees_data_and_a_closed_peer() -> None:
    mine, peer = socket.socketpair()
    with mine, peer:
        readable = _Readable(mine)
        assert not readable()
        peer.sendall(b"x")
        assert readable()
        mine.recv(1)
        assert not readable()
        peer.close()
        assert readable()  # EOF waiting
        mine.close()
        assert readable()  # a closed socket counts as readable: the connection is dropped
    assert _Readable(None)()


def test_lean_gc_restores_the_collector() -> None:
    before = gc.get_threshold()
    with lean_gc():
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
