#!/usr/bin/env python3
"""Conformance suite pod server: answers on TCP and UDP ports (default 80, 81)
with a token naming the pod, protocol and port, so a prober can tell a real
answer from anything else.

usage: server.py NAME [PORT...]     (token: "NAME tcp/80" etc.)
Prints "ready" once every socket is bound.
"""
import asyncio
import sys


class Udp(asyncio.DatagramProtocol):
    def __init__(self, token):
        self.token = token

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(self.token, addr)


async def main():
    name = sys.argv[1]
    ports = [int(p) for p in sys.argv[2:]] or [80, 81]
    loop = asyncio.get_running_loop()
    servers = []
    for port in ports:
        token = f"{name} tcp/{port}\n".encode()

        async def handle(reader, writer, token=token):
            try:
                writer.write(token)
                await writer.drain()
            finally:
                writer.close()

        servers.append(await asyncio.start_server(handle, "0.0.0.0", port, reuse_address=True))
        await loop.create_datagram_endpoint(lambda port=port: Udp(f"{name} udp/{port}\n".encode()),
                                            local_addr=("0.0.0.0", port))
    print("ready", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
