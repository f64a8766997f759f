"""Hypercorn settings for ``hypercorn -k trio -c python:signaling.server.hypercorn_config``.

They replace hypercorn's own defaults (16 MiB messages, no pings, a 3 s
graceful timeout, a listen backlog of 100) with ours, read from the same
environment variables and ``.env`` as ``signaling serve``.
"""

from __future__ import annotations

from .config import load_settings
from .serve import hypercorn_values

globals().update(hypercorn_values(load_settings()))
