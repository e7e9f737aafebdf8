"""Egress routes: the IPs our exchange calls leave from, to scale past one IP's weight budget.

Exchanges limit request weight per IP (services/exchanges/budget.py), so one IP caps how many
keys a deployment can check a minute, whatever its CPU. Each extra route — an HTTP(S) or SOCKS
proxy with a public IP of its own — brings its own budget per exchange.

Users whitelist our IP on their keys, so a user's calls must always leave from the same route:
:func:`egress_for` pins each user to one route —

1. the route whose public IP the key's own whitelist names (``key_info["ip_list"]``, read by the
   probe), so a user who whitelisted an IP keeps it whatever routes are added later;
2. otherwise by rendezvous hashing of the user id over the route names: deterministic without
   storage, the same for every connection of the user (one IP to whitelist everywhere, known
   before the first key is linked), and adding a route moves only the users it takes over
   (about 1/N of those without a whitelist match).

``direct`` (this host's own IP, ``EGRESS_IPS``) is always a route; ``EGRESS_PROXIES`` adds more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DIRECT = "direct"
PROXY_SCHEMES = ("http://", "https://", "socks4://", "socks5://", "socks5h://")


@dataclass(frozen=True, slots=True)
class Egress:
    """One route out: ``proxy`` None for this host's own IP; ``public_ip`` what users whitelist
    (None when the operator did not say)."""

    name: str
    proxy: str | None = None
    public_ip: str | None = None

    @property
    def is_socks(self) -> bool:
        return bool(self.proxy and self.proxy.startswith("socks"))


def routes_from_settings(
    direct_ips: Sequence[str], proxies: Mapping[str, Mapping[str, Any]]
) -> tuple[Egress, ...]:
    """``direct`` first, then each proxy by name (``{"url": ..., "ip": ...}``), in name order.

    ``EGRESS_IPS`` lists every IP users may need; the direct route's is the first one that is
    not a proxy's."""
    proxy_ips = {spec.get("ip") for spec in proxies.values()}
    own = [ip for ip in direct_ips if ip not in proxy_ips]
    direct = Egress(DIRECT, None, own[0] if own else None)
    extra = [Egress(name, str(spec["url"]), spec.get("ip") or None) for name, spec in sorted(proxies.items())]
    return (direct, *extra)


def whitelist_of(key_info: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The IPs a key's owner whitelisted, as the probe stored them (empty when unrestricted)."""
    return tuple(str(ip) for ip in (key_info or {}).get("ip_list") or ())


def _score(name: str, user_id: int) -> bytes:
    return hashlib.sha256(f"{name}:{user_id}".encode()).digest()


def egress_for(routes: Sequence[Egress], user_id: int, whitelist: Iterable[str] = ()) -> Egress:
    """The route every call of ``user_id``'s connections takes (see the module docstring)."""
    if len(routes) == 1:
        return routes[0]
    allowed = set(whitelist)
    if allowed:
        for route in routes:
            if route.public_ip and route.public_ip in allowed:
                return route
    return max(routes, key=lambda route: _score(route.name, user_id))
