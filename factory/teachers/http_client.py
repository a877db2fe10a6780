"""The HTTP client under the OpenAI teacher: openai's own defaults, with a cheaper idle-connection check.

Each time a request is queued or a response closed, httpcore asks every idle keep-alive connection
whether the server closed it ("is_readable"). Through anyio that question rebuilds the socket's
attribute table (a getpeername and a getsockname call) just to find the raw socket: ~4 µs, asked
~100 times per request with 64 slots and 128 workers, which was ~0.4 ms of CPU per request. The
streams here look the raw socket up and register it with a poll object once, then ask the same
question the same way (a zero-timeout poll), so which connections are reused does not change.
"""

from __future__ import annotations

import select
import ssl
from collections.abc import Iterable
from typing import Any

import openai

try:  # openai 3.x talks through httpx2/httpcore2, earlier versions through httpx/httpcore
    import httpcore2 as httpcore
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpcore  # type: ignore[no-redef]
    import httpx  # type: ignore[no-redef]

# openai's own client limits (openai._constants.DEFAULT_CONNECTION_LIMITS), which a custom transport
# would otherwise not get: httpx applies `limits` only to the transports it builds itself.
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


class _Readable:
    """httpcore's readability test (data or EOF waiting) for one socket, with its poll set up once."""

    __slots__ = ("_poller", "_socket")

    def __init__(self, sock: Any):
        self._socket = sock
        fd = -1 if sock is None else sock.fileno()
        self._poller: Any = None
        if fd >= 0 and hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(fd, select.POLLIN)

    def __call__(self) -> bool:
        """True when a read would not block, or the socket is closed or missing."""
        fd = -1 if self._socket is None else self._socket.fileno()
        if fd < 0:
            return True
        if self._poller is None:  # pragma: no cover - POSIX has poll
            return bool(select.select([fd], [], [], 0)[0])
        return bool(self._poller.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    """An httpcore network stream that remembers its raw socket; everything else is the inner stream's."""

    def __init__(self, inner: httpcore.AsyncNetworkStream):
        self._inner = inner
        # Fixed for the stream's life: asyncio and uvloop transports hand out the same socket object.
        self._readable = _Readable(inner.get_extra_info("socket"))

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Read up to max_bytes."""
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Write all of buffer."""
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Upgrade to TLS; the TLS stream is wrapped the same way."""
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        """Answer "is_readable" from the remembered socket; pass every other question on."""
        if info == "is_readable":
            return self._readable()
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, with its streams wrapped in `_Stream`."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Open a TCP connection."""
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Open a Unix socket connection."""
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's connect retries use it)."""
        await self._inner.sleep(seconds)


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that uses `_Backend`."""

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)
        # httpx's transport builds its pool without a network backend; the pool's public
        # constructor takes one, so the same pool is built again here with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )


def make_http_client(timeout: float) -> httpx.AsyncClient:
    """openai's default async HTTP client (same limits, redirects and proxy handling) on `_Transport`."""
    return openai.DefaultAsyncHttpxClient(timeout=timeout, transport=_Transport(LIMITS))
