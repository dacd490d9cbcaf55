"""TLS to RabbitMQ (``amqps://``) and Redis (``rediss://``): the client options of the settings.

The URL's scheme turns TLS on; the ``INFERNO_BROKER_TLS_*`` and ``INFERNO_REDIS_TLS_*`` files
only choose what verifies the server (a CA bundle instead of the system's trust store) and the
client certificate of mutual TLS. Verification is never turned off: a certificate that does not
chain to the CA, or names another host, fails the connection.
"""

from __future__ import annotations

import ssl
from typing import Any

from common.settings import CommonSettings

__all__ = ["broker_ssl_context", "redis_ssl_options"]


def broker_ssl_context(settings: CommonSettings) -> ssl.SSLContext | None:
    """The context of an ``amqps://`` connection; ``None`` leaves aiormq's default (the system's
    CAs, verified) for a URL without TLS files, and for a plain ``amqp://`` URL."""
    url = settings.broker_url or ""
    if not url.startswith("amqps://") or (
            settings.broker_tls_ca_file is None and settings.broker_tls_cert_file is None):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=None if settings.broker_tls_ca_file is None else str(settings.broker_tls_ca_file))
    if settings.broker_tls_cert_file is not None:
        context.load_cert_chain(str(settings.broker_tls_cert_file),
                                None if settings.broker_tls_key_file is None
                                else str(settings.broker_tls_key_file))
    return context


def redis_ssl_options(settings: CommonSettings) -> dict[str, Any]:
    """Keyword arguments of ``redis.asyncio.Redis.from_url`` for a ``rediss://`` URL (empty for
    ``redis://``): certificates required and host names checked, with the configured files."""
    if not (settings.redis_url or "").startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.redis_tls_cert_file)
        options["ssl_keyfile"] = (None if settings.redis_tls_key_file is None
                                  else str(settings.redis_tls_key_file))
    return options
