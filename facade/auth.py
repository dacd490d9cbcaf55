"""Bearer tokens: ``INFERNO_ADMIN_TOKEN`` guards the admin calls, ``INFERNO_API_TOKEN`` predict and
metadata. Health and ``/metrics`` are never guarded.

- A guarded request needs ``Authorization: Bearer <token>``; without it, or with another token,
  it is a 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``. Tokens are compared with
  ``hmac.compare_digest`` on bytes: the time taken does not depend on how much of a guess matched.
- The admin token is accepted wherever the API token is (an operator need not hold both).
- No admin token: admin calls stay open on a loopback address (``inferno serve`` on its default
  127.0.0.1, the quick start) and are refused with 403 ``forbidden`` on any other, since anyone
  who reaches the port could unload every model.

``Guard.api`` and ``Guard.admin`` are FastAPI dependencies; ``Guard.check_api`` is the same check
for the predict fast path (``facade.front``), one comparison per request.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from pydantic import SecretStr
from starlette.requests import Request

from common.errors import Forbidden, Unauthorized
from common.settings import FacadeSettings

__all__ = ["Guard", "is_loopback"]

log = logging.getLogger(__name__)

_SCHEME = b"bearer "


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: an address only this machine reaches."""
    if host.strip("[]").lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume others reach it


def _secret(value: SecretStr | None) -> bytes | None:
    return None if value is None else value.get_secret_value().encode()


class Guard:
    def __init__(self, admin_token: SecretStr | None, api_token: SecretStr | None,
                 host: str) -> None:
        self._admin = _secret(admin_token)
        self._api = _secret(api_token)
        self._host = host
        self.admin_open = self._admin is None and is_loopback(host)
        """No admin token, and only this machine reaches the server: admin calls are open."""

    @classmethod
    def from_settings(cls, settings: FacadeSettings) -> Guard:
        guard = cls(settings.admin_token, settings.api_token, settings.host)
        if guard._admin is None and not guard.admin_open:
            log.warning("listening on %s without INFERNO_ADMIN_TOKEN: admin calls "
                        "(load, unload, activate) are refused with 403", settings.host)
        return guard

    @property
    def guards_api(self) -> bool:
        return self._api is not None

    def check_api(self, authorization: bytes | None) -> None:
        """Raise ``Unauthorized`` unless the header holds the API (or the admin) token."""
        if self._api is None:
            return
        given = _bearer(authorization)
        if given is not None and (hmac.compare_digest(given, self._api) or (
                self._admin is not None and hmac.compare_digest(given, self._admin))):
            return
        raise _unauthorized(given, "this route needs INFERNO_API_TOKEN as a bearer token")

    def check_admin(self, authorization: bytes | None) -> None:
        """Raise ``Unauthorized`` or ``Forbidden`` unless the admin call may go ahead."""
        if self._admin is None:
            if self.admin_open:
                return
            raise Forbidden(
                f"Admin calls are refused: the server listens on {self._host}, not a loopback "
                f"address, and has no admin token. Set INFERNO_ADMIN_TOKEN and send it as "
                f"'Authorization: Bearer <token>'")
        given = _bearer(authorization)
        if given is not None and hmac.compare_digest(given, self._admin):
            return
        raise _unauthorized(given, "admin calls need INFERNO_ADMIN_TOKEN as a bearer token")

    async def api(self, request: Request) -> None:
        """FastAPI dependency of the metadata routes."""
        if self._api is not None:
            self.check_api(_header(request))

    async def admin(self, request: Request) -> None:
        """FastAPI dependency of the admin routes."""
        if not self.admin_open:
            self.check_admin(_header(request))


def _header(request: Request) -> bytes | None:
    value = request.headers.get("authorization")
    return None if value is None else value.encode("latin-1")


def _bearer(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case)."""
    if authorization is None or authorization[:7].lower() != _SCHEME:
        return None
    return authorization[7:].strip()


def _unauthorized(given: bytes | None, what: str) -> Unauthorized:
    # The token given is never part of the message.
    if given is None:
        return Unauthorized(f"Missing bearer token: {what} ('Authorization: Bearer <token>')")
    return Unauthorized(f"Invalid bearer token: {what}")
