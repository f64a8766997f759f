"""The trio shell around the core: sockets, timers, HTTP and the CLI's server."""

from __future__ import annotations

from .app import create_app
from .config import ConfigError, Settings, load_settings
from .hub import Hub
from .serve import serve

__all__ = ["ConfigError", "Hub", "Settings", "create_app", "load_settings", "serve"]
