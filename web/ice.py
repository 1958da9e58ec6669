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


CONSENT_RETRANSMISSIONS = 2     # a consent check may take 0.5 + 1 + 2 s to be answered (aioice: one 0.5 s try)


def tolerate_slow_consent() -> None:
    """Give each ICE consent check (RFC 7675) retransmissions instead of aioice's single 0.5 s try.

    Measured (loaded 2-core machine, 4 Chromium pages + a hostile client): every page's connection was dropped with
    "Consent to send expired" about 33 s after it started, while its frames were still flowing -- six consent checks
    in a row were answered later than 0.5 s. The browser did consent; the answers were only late. With retransmissions
    (3.5 s per check, one check per ~5 s) a starved but live browser keeps its connection and consent still expires
    after six unanswered checks. aioice issues no other request with retransmissions=0.
    """
    import aioice.ice

    protocol = aioice.ice.StunProtocol
    if getattr(protocol.request, "_micromotion_consent", False):
        return
    original = protocol.request

    async def request(self, request, addr, integrity_key=None, retransmissions=None):
        if retransmissions == 0:
            retransmissions = CONSENT_RETRANSMISSIONS
        return await original(self, request, addr, integrity_key=integrity_key, retransmissions=retransmissions)

    request._micromotion_consent = True
    protocol.request = request
