"""Which hosts only this machine reaches: the service (deploy/service.py) and `ftflow up` (flows/ops/stack.py)
refuse to listen beyond them without credentials."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True when `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False
