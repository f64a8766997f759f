"""Hypercorn settings for ``hypercorn -k trio -c python:signaling.server.hypercorn_config``.

They replace hypercorn's own defaults (16 MiB messages, no pings, a 3 s
graceful timeout, a listen backlog of 100) with ours, read from the same
environment variables and ``.env`` as ``signaling serve``. A setting that
cannot work stops hypercorn here, in one line, before any worker starts.
"""

from __future__ import annotations

import sys

from .config import ConfigError, load_settings
from .serve import hypercorn_values


def _workers_flag(argv: list[str]) -> int:
    """``-w N`` / ``--workers N`` from hypercorn's command line (1 when absent)."""
    for index, arg in enumerate(argv):
        value = None
        if arg in ("-w", "--workers") and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        elif arg.startswith("-w") and arg[2:].isdigit():
            value = arg[2:]
        if value is not None and value.isdigit():
            return int(value)
    return 1


try:
    _settings = load_settings()
    _workers = _workers_flag(sys.argv[1:])
    if _workers > 1 and not _settings.redis_url:
        raise ConfigError(
            f"-w {_workers} needs REDIS_URL: without it each hypercorn worker has its own "
            "sessions and users in different workers never meet (use -w 1, or "
            "`signaling serve --workers N` with REDIS_URL)"
        )
except ConfigError as exc:
    raise SystemExit(f"signaling: configuration error: {exc}") from None

globals().update(hypercorn_values(_settings))
