"""The API's listening socket: connections accepted on it send without Nagle's delay.

asyncio sets TCP_NODELAY on a connection only when its socket says it is TCP (proto IPPROTO_TCP);
a socket made with proto 0 hands that 0 to every accepted connection. Without TCP_NODELAY, uvicorn's
response (headers, then body, two writes) waits for the client's delayed ACK: ~40 ms a request.
"""

from __future__ import annotations

import asyncio
import socket

from cloud.startup import bind_http_socket


def test_connections_accepted_on_the_api_socket_have_tcp_nodelay() -> None:
    async def accepted_nodelay() -> int:
        sock = bind_http_socket("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn: socket.socket = transport.get_extra_info("socket")
                seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Probe, sock=sock)
        try:
            _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            try:
                return await asyncio.wait_for(seen, timeout=10)
            finally:
                writer.close()
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
