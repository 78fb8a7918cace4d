"""Cut-off hosts for the ``ha`` tests: a network namespace joined to this one by a veth pair,
and TCP relays that make services listening on 127.0.0.1 reachable from it.

The namespace is "another host": its only link is the veth pair (a private /30 network);
taking the host end down cuts it off, ``tc netem`` on its end adds loss and latency. Nothing
leaves the machine. Creating namespaces needs root (CAP_NET_ADMIN) and iproute2 (``ip``,
``tc``); :func:`netns_unavailable` says why not when it cannot be done, so a test can skip
with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_unavailable() -> str | None:
    """Why a network namespace cannot be created here, or None when it can (tried for real)."""
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"{tool} ({package}) is not installed"
    name = f"q18probe{os.getpid()}"
    probe = _ip("netns", "add", name, check=False)
    if probe.returncode != 0:
        return f"ip netns add failed (needs root / CAP_NET_ADMIN): {probe.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass(frozen=True)
class Netns:
    """A namespace ``name`` whose address is ``ns_ip``, reached from here at ``host_ip``."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *command]

    def cut(self) -> None:
        """Unplug the link: nothing passes either way until :meth:`restore`."""
        _ip("link", "set", "dev", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", "dev", self.host_if, "up")

    def degrade(self, loss_pct: float, delay_ms: int, relays: Sequence[Relay]) -> str:
        """Loss and latency on the link; what was applied. ``tc netem`` where the kernel has it;
        else (sch_netem not built, as in some VMs) packets dropped at random by iptables'
        ``statistic`` match in the namespace and the delay added by the relays."""
        netem = subprocess.run(
            self.argv(
                "tc",
                *f"qdisc replace dev {self.ns_if} root netem delay {delay_ms}ms loss {loss_pct}%".split(),
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if netem.returncode == 0:
            return f"tc netem delay {delay_ms}ms loss {loss_pct}%"
        for chain in ("INPUT", "OUTPUT"):
            flag = "-i" if chain == "INPUT" else "-o"
            match = f"-m statistic --mode random --probability {loss_pct / 100}"
            subprocess.run(
                self.argv("iptables", "-A", chain, flag, self.ns_if, *match.split(), "-j", "DROP"),
                check=True,
                capture_output=True,
                timeout=30,
            )
        for relay in relays:
            relay.delay_s = delay_ms / 1000
        return f"iptables statistic loss {loss_pct}%, relay delay {delay_ms}ms ({netem.stderr.strip()})"

    def heal(self, relays: Sequence[Relay]) -> None:
        """Undo :meth:`degrade`."""
        subprocess.run(
            self.argv("tc", "qdisc", "del", "dev", self.ns_if, "root"), capture_output=True, timeout=30
        )
        subprocess.run(self.argv("iptables", "-F"), capture_output=True, timeout=30)
        for relay in relays:
            relay.delay_s = 0.0

    async def http_json(self, url: str) -> tuple[int, Any]:
        """GET ``url`` from inside the namespace (as a monitor on that host would): (status, JSON
        body), (0, None) when nothing answers."""
        script = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            "    r = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
            "    code, body = r.status, r.read()\n"
            "except urllib.error.HTTPError as e:\n"
            "    code, body = e.code, e.read()\n"
            "except OSError:\n"
            "    code, body = 0, b'null'\n"
            "sys.stdout.write(str(code) + '\\n' + body.decode())\n"
        )
        proc = await asyncio.create_subprocess_exec(
            *self.argv(sys.executable, "-c", script, url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        code, _, body = out.decode().partition("\n")
        try:
            return int(code), orjson.loads(body) if body else None
        except (ValueError, orjson.JSONDecodeError):
            return 0, None


def _free_subnet() -> int:
    """A third octet of 10.218.x.0/24 no interface here uses (a /30 of it is the link)."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for _ in range(200):
        octet = random.randrange(1, 255)
        if f"10.218.{octet}." not in used:
            return octet
    raise RuntimeError("no free 10.218.x.0/30 subnet")


@contextlib.contextmanager
def network_namespace() -> Iterator[Netns]:
    """A fresh namespace with its veth link up; removed (with the link) however the block ends."""
    tag = f"{os.getpid() % 100000}{random.randrange(1000):03d}"
    octet = _free_subnet()
    ns = Netns(f"q18ns{tag}", f"q18h{tag}", f"q18n{tag}", f"10.218.{octet}.1", f"10.218.{octet}.2")
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        for args in (
            ("addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_if),
            ("link", "set", ns.ns_if, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("-n", ns.name, *args)
        yield ns
    finally:
        # Deleting the namespace destroys its veth end, and with it the peer; the explicit
        # link delete covers a failure before the end was moved in.
        _ip("netns", "del", ns.name, check=False)
        _ip("link", "del", ns.host_if, check=False)


@dataclass
class Relay:
    port: int = 0
    delay_s: float = 0.0  # added before each chunk is passed on (a slow link)


@contextlib.asynccontextmanager
async def tcp_relay(listen_host: str, target_host: str, target_port: int) -> AsyncIterator[Relay]:
    """Forward connections to ``listen_host``:``port`` to the target, byte for byte."""
    tasks: set[asyncio.Task[None]] = set()
    relay = Relay()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if relay.delay_s:
                    await asyncio.sleep(relay.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # The target sees a healthy loopback peer even while the client's link is cut; these
        # keepalives end a cut-off client's connection after a few seconds, as a server's own
        # keepalives would for a remote client (so its session, and its advisory locks, end).
        sock = client_w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 4000)
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        for t in (pipe(client_r, server_w), pipe(server_r, client_w)):
            task = asyncio.create_task(t)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, listen_host, 0)
    relay.port = int(server.sockets[0].getsockname()[1])
    try:
        yield relay
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
