"""Ports on 127.0.0.1 for the servers: either given (checked free) or picked by the kernel."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

from igniter_opt.errors import ApplyError

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerPorts:
    http: int
    grpc: int
    metrics: int

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.http, self.grpc, self.metrics)


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when a TCP socket can bind ``host:port`` now (no SO_REUSEADDR: a listener anywhere counts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def allocate_ports(n_servers: int, base_port: int | None = None, host: str = HOST,
                   exclude: frozenset[int] = frozenset()) -> list[ServerPorts]:
    """Three ports (HTTP, gRPC, metrics) per server, none of them in ``exclude``.

    With ``base_port`` the ports are base, base+1, ... in order and each must be free, else a
    one-line error names the first one in use. Without it, the kernel picks free ports (all
    sockets are held until every port is chosen, so no port is handed out twice).
    """
    need = 3 * n_servers
    if base_port is not None:
        if not 1024 <= base_port <= 65535 - need + 1:
            raise ApplyError(f"--base-port {base_port}: need {need} ports from it, within 1024..65535")
        ports = list(range(base_port, base_port + need))
        for p in ports:
            if p in exclude:
                raise ApplyError(
                    f"port {p} is already taken by another server of this run; pass another --base-port"
                )
            if not port_is_free(p, host):
                raise ApplyError(
                    f"port {p} on {host} is in use; stop what listens there or pass another --base-port "
                    f"(this plan needs {need} consecutive free ports)"
                )
    else:
        with contextlib.ExitStack() as stack:
            ports = []
            while len(ports) < need:
                s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                s.bind((host, 0))
                if s.getsockname()[1] not in exclude:  # still held: the kernel will not hand it out again
                    ports.append(s.getsockname()[1])
    return [ServerPorts(*ports[3 * i : 3 * i + 3]) for i in range(n_servers)]


def check_ports_free(all_ports: list[ServerPorts], host: str = HOST) -> None:
    """Re-check right before starting: every port still free, else a one-line error."""
    for sp in all_ports:
        for p in sp.as_tuple():
            if not port_is_free(p, host):
                raise ApplyError(
                    f"port {p} on {host} is in use; stop what listens there or pass another --base-port"
                )
