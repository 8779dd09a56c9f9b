"""`make run` tells the worker where the portal listens, so links in notification emails work."""

from __future__ import annotations

import socket

from controlplane.management.commands.runall import portal_url


def test_the_portal_url_follows_the_host_and_port() -> None:
    assert portal_url("127.0.0.1", 8765) == "http://127.0.0.1:8765"
    assert portal_url("::1", 8000) == "http://[::1]:8000"
    assert portal_url("0.0.0.0", 8080) == f"http://{socket.getfqdn()}:8080"
