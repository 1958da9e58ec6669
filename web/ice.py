"""ICE for the page's WebRTC: which host candidates aioice gathers, and the STUN/TURN list shared with the page."""
from __future__ import annotations

_original_get_host_addresses = None


def restrict_host_candidates(addresses: list[str] | None) -> None:
    """Make aioice gather host candidates on `addresses` only (None: its default, or 127.0.0.1 if empty).

    aioice never offers 127.0.0.1 on its own; in a loopback-only network namespace (the tests) it would
    then offer nothing, so loopback is the fallback when no other interface has an address.
    """
    global _original_get_host_addresses
    import aioice.ice

    if _original_get_host_addresses is None:
        _original_get_host_addresses = aioice.ice.get_host_addresses
    original = _original_get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses:
            return list(addresses)
        return original(use_ipv4, use_ipv6) or ["127.0.0.1"]

    aioice.ice.get_host_addresses = get_host_addresses


def ice_servers_from_urls(stun: list[str] | None = None, turn: list[str] | None = None,
                          turn_user: str | None = None, turn_password: str | None = None) -> list[dict]:
    """The ICE server list shared by the server and the page. Empty unless --stun/--turn are given."""
    servers: list[dict] = []
    for url in stun or []:
        servers.append({"urls": [url if url.startswith("stun:") else f"stun:{url}"]})
    for url in turn or []:
        entry = {"urls": [url if url.startswith(("turn:", "turns:")) else f"turn:{url}"]}
        if turn_user is not None:
            entry["username"] = turn_user
            entry["credential"] = turn_password or ""
        servers.append(entry)
    return servers


def addresses_for_bind(host: str | None) -> list[str] | None:
    """The media (ICE host candidate) addresses that follow the HTTP bind address.

    127.0.0.1 / localhost -> ["127.0.0.1"] (a local-only server keeps its media local too), ::1 -> ["::1"], a
    specific address -> [it], all interfaces (0.0.0.0, ::, "") or a host name -> None (every interface, aioice's
    choice). `--ice-address` overrides this.
    """
    import ipaddress

    name = (host or "").strip().strip("[]").lower()
    if name in ("", "0.0.0.0", "::"):
        return None
    if name == "localhost":
        return ["127.0.0.1"]
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    if ip.is_loopback:
        return ["::1"] if ip.version == 6 else ["127.0.0.1"]
    return [str(ip)]
