#!/usr/bin/env python3
"""Conformance suite prober: from inside one pod, probes every target on every
port concurrently and prints one line per probe:

    <target> <proto>/<port> OK|FAIL <packets> <detail>

OK means the target's server answered with its exact token ("<target> tcp/80").
<packets> is how many packets the probe put on the wire towards the target
(TCP: 1 SYN + the kernel's SYN retransmissions, read from TCP_INFO before the
socket is closed; UDP and ICMP: 1), so a test can compare drop counters exactly.

usage: prober.py --sport-base N [--timeout S] [--tcp-timeout S] --ports tcp/80,udp/81,icmp NAME=IP...
Each probe uses its own source port (sport-base + index; ICMP: echo id) so no
probe can ever match a conntrack entry left by an earlier probe.
"""
import argparse
import asyncio
import os
import socket
import struct
import time

TCP_INFO_RETRANSMITS = 2  # struct tcp_info: u8 state, ca_state, retransmits, ...


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


async def probe_tcp(loop, name, ip, port, sport, timeout, tcp_timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setblocking(False)
    s.bind(("0.0.0.0", sport))
    start = time.monotonic()
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(s, (ip, port)), tcp_timeout)
        except (asyncio.TimeoutError, OSError) as e:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
            return False, 1 + info[TCP_INFO_RETRANSMITS], f"connect:{type(e).__name__}"
        data = b""
        left = timeout - (time.monotonic() - start)
        try:
            while not data.endswith(b"\n") and left > 0:
                chunk = await asyncio.wait_for(loop.sock_recv(s, 100), left)
                if not chunk:
                    break
                data += chunk
                left = timeout - (time.monotonic() - start)
        except (asyncio.TimeoutError, OSError) as e:
            return False, 1, f"read:{type(e).__name__}"
        want = f"{name} tcp/{port}\n".encode()
        return data == want, 1, "answer" if data == want else f"bad-answer:{data!r}"
    finally:
        s.close()


class UdpReply(asyncio.DatagramProtocol):
    def __init__(self):
        self.fut = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        if not self.fut.done():
            self.fut.set_result(data)

    def error_received(self, exc):
        if not self.fut.done():
            self.fut.set_exception(exc)


async def probe_udp(loop, name, ip, port, sport, timeout):
    transport, proto = await loop.create_datagram_endpoint(
        UdpReply, local_addr=("0.0.0.0", sport), remote_addr=(ip, port), reuse_port=False)
    try:
        transport.sendto(b"probe")
        try:
            data = await asyncio.wait_for(proto.fut, timeout)
        except (asyncio.TimeoutError, OSError) as e:
            return False, 1, f"recv:{type(e).__name__}"
        want = f"{name} udp/{port}\n".encode()
        return data == want, 1, "answer" if data == want else f"bad-answer:{data!r}"
    finally:
        transport.close()


async def probe_icmp(loop, name, ip, ident, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setblocking(False)
    try:
        payload = b"membrane-conformance"
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        pkt = struct.pack("!BBHHH", 8, 0, checksum(hdr + payload), ident, 1) + payload
        await loop.sock_sendto(s, pkt, (ip, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, 1, "recv:TimeoutError"
            try:
                data, addr = await asyncio.wait_for(loop.sock_recvfrom(s, 2048), left)
            except asyncio.TimeoutError:
                return False, 1, "recv:TimeoutError"
            ihl = (data[0] & 0x0F) * 4
            typ, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if addr[0] == ip and typ == 0 and rid == ident:
                return True, 1, "answer"
    finally:
        s.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sport-base", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--tcp-timeout", type=float, default=0.8)
    ap.add_argument("--ports", default="tcp/80,tcp/81,udp/80,udp/81")
    ap.add_argument("targets", nargs="+")
    a = ap.parse_args()
    loop = asyncio.get_running_loop()
    ports = a.ports.split(",")
    jobs, keys = [], []
    i = 0
    for t in a.targets:
        name, ip = t.split("=", 1)
        for p in ports:
            sport = a.sport_base + i
            i += 1
            if p == "icmp":
                jobs.append(probe_icmp(loop, name, ip, sport, a.timeout))
            else:
                proto, port = p.split("/")
                if proto == "tcp":
                    jobs.append(probe_tcp(loop, name, ip, int(port), sport, a.timeout, a.tcp_timeout))
                else:
                    jobs.append(probe_udp(loop, name, ip, int(port), sport, a.timeout))
            keys.append((name, p))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for (name, p), r in zip(keys, results):
        if isinstance(r, BaseException):
            print(f"{name} {p} FAIL 0 error:{type(r).__name__}:{r}")
        else:
            ok, packets, detail = r
            print(f"{name} {p} {'OK' if ok else 'FAIL'} {packets} {detail}")


asyncio.run(main())
