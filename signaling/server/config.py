"""Settings: defaults < ``.env`` file < environment variables < CLI flags.

`SETTINGS` is the one table of every setting (its environment variable, CLI
flag, default and meaning): the CLI, ``.env.example`` and the README's table
are all made from it, and a test checks they agree.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["SETTINGS", "ConfigError", "Setting", "Settings", "env_example", "load_settings"]


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message is one line for the operator."""


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number from 0 to 65535")
    return value


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("expected a whole number of 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number of messages per second (0 turns it off)") from None
    if value < 0:
        raise ValueError("expected a number of messages per second of 0 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not value > 0:
        raise ValueError("expected a number of seconds above 0")
    return value


def _window(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 <= value <= 3600:
        raise ValueError("expected a number of seconds from 0 (off) to 3600")
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number of milliseconds") from None
    if not 0 <= value <= 1000:
        raise ValueError("expected a number of milliseconds from 0 to 1000")
    return value


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _stun_urls(text: str) -> tuple[str, ...]:
    urls = _list(text)
    for url in urls:
        if not url.startswith(("stun:", "stuns:")):
            raise ValueError(f"{url!r} is not a stun: or stuns: URL")
    return urls


def _origins(text: str) -> tuple[str, ...]:
    from .origins import normalize_origin

    entries = _list(text)
    origins = []
    for origin in entries:
        if origin == "*":
            origins.append(origin)
            continue
        try:
            origins.append(normalize_origin(origin, wildcard=True))
        except ValueError as exc:
            raise ValueError(f"{origin!r}: {exc}" if len(entries) > 1 else str(exc)) from None
    return tuple(dict.fromkeys(origins))


def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for item in _list(text):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network like 10.0.0.0/8") from None
    return tuple(networks)


def _path(text: str) -> str:
    path = text.strip()
    if path and not Path(path).is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _turn_provider(text: str) -> str:
    value = text.strip().lower()
    if value not in {"none", "cloudflare", "rest"}:
        raise ValueError("expected none, cloudflare or rest")
    return value


def _turn_urls(text: str) -> tuple[str, ...]:
    urls = _list(text)
    for url in urls:
        if not url.startswith(("turn:", "turns:")):
            raise ValueError(f"{url!r} is not a turn: or turns: URL")
    return urls


def _http_url(text: str) -> str:
    url = text.strip()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    return url


def _optional_redis_url(text: str) -> str:
    url = text.strip()
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{url!r} is not a redis://, rediss:// or unix:// URL")
    return url


def _optional_http_url(text: str) -> str:
    return _http_url(text) if text.strip() else ""


def _jwt_algorithms(text: str) -> tuple[str, ...]:
    algorithms = _list(text)
    for algorithm in algorithms:
        if algorithm not in {"RS256", "ES256", "EdDSA"}:
            raise ValueError(f"{algorithm!r}: expected RS256, ES256 or EdDSA")
    if not algorithms:
        raise ValueError("expected at least one of RS256, ES256, EdDSA")
    return algorithms


def _token_secret(text: str) -> str:
    secret = text.strip()
    if secret and len(secret) < 32:
        raise ValueError("a join-token secret needs at least 32 characters")
    return secret


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in {"text", "json"}:
        raise ValueError("expected text or json")
    return value


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected one of debug, info, warning, error")
    return level


@dataclass(frozen=True)
class Setting:
    """One setting: where it comes from and how its text becomes a value."""

    name: str
    env: str
    flag: str
    default: str
    parse: Callable[[str], Any]
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "SIGNALING_HOST", "--host", "0.0.0.0", str.strip, "Address to listen on."),
    Setting(
        "port",
        "SIGNALING_SERVER_PORT",
        "--port",
        "3001",
        _port,
        "Port for HTTP and /ws (0 picks a free one).",
    ),
    Setting(
        "certfile",
        "SSL_CERTFILE",
        "--certfile",
        "",
        _path,
        "PEM certificate chain: with --keyfile, the port serves https:// and wss://.",
    ),
    Setting(
        "keyfile",
        "SSL_KEYFILE",
        "--keyfile",
        "",
        _path,
        "PEM private key of --certfile.",
    ),
    Setting(
        "trusted_proxies",
        "SIGNALING_TRUSTED_PROXIES",
        "--trusted-proxies",
        "",
        _networks,
        "Proxies (IPs or networks) whose X-Forwarded-For names the client for per-IP caps.",
    ),
    Setting(
        "firebase_project_id",
        "FIREBASE_PROJECT_ID",
        "--firebase-project-id",
        "",
        str.strip,
        "Verify Firebase ID tokens of this project in auth (replaces development auth).",
    ),
    Setting(
        "firebase_certs_url",
        "FIREBASE_CERTS_URL",
        "--firebase-certs-url",
        "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com",
        _http_url,
        "Where Google publishes the Firebase signing certificates.",
    ),
    Setting(
        "jwt_jwks_url",
        "JWT_JWKS_URL",
        "--jwt-jwks-url",
        "",
        _optional_http_url,
        "Verify tokens of any OIDC issuer against this JWKS URL (Auth0, Keycloak, Supabase…).",
    ),
    Setting(
        "jwt_issuer",
        "JWT_ISSUER",
        "--jwt-issuer",
        "",
        str.strip,
        "Required iss of JWKS-verified tokens.",
    ),
    Setting(
        "jwt_audience",
        "JWT_AUDIENCE",
        "--jwt-audience",
        "",
        str.strip,
        "Required aud of JWKS-verified tokens.",
    ),
    Setting(
        "jwt_algorithms",
        "JWT_ALGORITHMS",
        "--jwt-algorithms",
        "RS256",
        _jwt_algorithms,
        "Comma-separated algorithms JWKS-verified tokens may use: RS256, ES256, EdDSA.",
    ),
    Setting(
        "jwt_user_claim",
        "JWT_USER_CLAIM",
        "--jwt-user-claim",
        "sub",
        str.strip,
        "The claim of a JWKS-verified token that is the userId.",
    ),
    Setting(
        "token_secret",
        "SIGNALING_TOKEN_SECRET",
        "--token-secret",
        "",
        _token_secret,
        "Verify HS256 join tokens signed with this secret (32+ characters).",
    ),
    Setting(
        "token_leeway",
        "SIGNALING_TOKEN_LEEWAY",
        "--token-leeway",
        "10",
        _seconds,
        "Seconds of clock skew allowed when checking exp, iat and auth_time.",
    ),
    Setting(
        "membership_webhook_url",
        "MEMBERSHIP_WEBHOOK_URL",
        "--membership-webhook-url",
        "",
        _optional_http_url,
        "Ask this URL before each join: POST {userId, sessionId}; 200 allows, 403 denies.",
    ),
    Setting(
        "membership_webhook_timeout",
        "MEMBERSHIP_WEBHOOK_TIMEOUT",
        "--membership-webhook-timeout",
        "2",
        _seconds,
        "Seconds to wait for the membership webhook; no answer denies the join.",
    ),
    Setting(
        "membership_cache_seconds",
        "MEMBERSHIP_CACHE_SECONDS",
        "--membership-cache-seconds",
        "30",
        _seconds,
        "Seconds a webhook decision is reused for the same user and session.",
    ),
    Setting(
        "allowed_origins",
        "ALLOWED_ORIGINS",
        "--allowed-origins",
        "",
        _origins,
        "Comma-separated browser origins allowed to open /ws, like https://app.example.com "
        "(case and default ports do not matter; https://*.example.com allows its subdomains); "
        "empty allows any.",
    ),
    Setting(
        "allow_no_origin",
        "SIGNALING_ALLOW_NO_ORIGIN",
        "--allow-no-origin",
        "true",
        _bool,
        "Accept /ws upgrades without an Origin header (native apps, servers); false refuses them.",
    ),
    Setting(
        "stun_urls",
        "STUN_URLS",
        "--stun-urls",
        "stun:stun.l.google.com:19302,stun:stun1.l.google.com:19302",
        _stun_urls,
        "Comma-separated STUN URLs sent in welcome and POST /turn/credentials.",
    ),
    Setting(
        "turn_provider",
        "TURN_PROVIDER",
        "--turn-provider",
        "none",
        _turn_provider,
        "TURN credentials: none (STUN only), cloudflare, or rest (coturn shared secret).",
    ),
    Setting(
        "turn_ttl",
        "TURN_TTL",
        "--turn-ttl",
        "86400",
        _positive_int,
        "Seconds TURN credentials stay valid (Cloudflare caps it at 172800).",
    ),
    Setting(
        "cloudflare_turn_key_id",
        "CLOUDFLARE_TURN_KEY_ID",
        "--cloudflare-turn-key-id",
        "",
        str.strip,
        "Cloudflare Realtime TURN key id (TURN_PROVIDER=cloudflare).",
    ),
    Setting(
        "cloudflare_api_token",
        "CLOUDFLARE_API_TOKEN",
        "--cloudflare-api-token",
        "",
        str.strip,
        "Cloudflare TURN key API token (TURN_PROVIDER=cloudflare).",
    ),
    Setting(
        "cloudflare_account_id",
        "CLOUDFLARE_ACCOUNT_ID",
        "--cloudflare-account-id",
        "",
        str.strip,
        "Accepted for compatibility with the old server; not needed by the TURN API.",
    ),
    Setting(
        "cloudflare_api_base_url",
        "CLOUDFLARE_API_BASE_URL",
        "--cloudflare-api-base-url",
        "https://rtc.live.cloudflare.com",
        _http_url,
        "Base URL of Cloudflare's Realtime API (tests point it at a local server).",
    ),
    Setting(
        "turn_request_timeout",
        "TURN_REQUEST_TIMEOUT",
        "--turn-request-timeout",
        "5",
        _seconds,
        "Seconds to wait for the TURN provider before answering STUN only.",
    ),
    Setting(
        "turn_refresh_margin",
        "TURN_REFRESH_MARGIN",
        "--turn-refresh-margin",
        "300",
        _seconds,
        "Fetch new Cloudflare credentials this many seconds before the cached ones expire.",
    ),
    Setting(
        "turn_allow_port_53",
        "TURN_ALLOW_PORT_53",
        "--turn-allow-port-53",
        "false",
        _bool,
        "Keep Cloudflare's port-53 URLs (browsers block them, so they are dropped by default).",
    ),
    Setting(
        "turn_rest_secret",
        "TURN_REST_SECRET",
        "--turn-rest-secret",
        "",
        str.strip,
        "Shared secret of the TURN server (coturn static-auth-secret; TURN_PROVIDER=rest).",
    ),
    Setting(
        "turn_rest_urls",
        "TURN_REST_URLS",
        "--turn-rest-urls",
        "",
        _turn_urls,
        "Comma-separated turn:/turns: URLs of that server (TURN_PROVIDER=rest).",
    ),
    Setting(
        "workers",
        "SIGNALING_WORKERS",
        "--workers",
        "1",
        _positive_int,
        "Worker processes sharing the port (more than 1 needs REDIS_URL).",
    ),
    Setting(
        "redis_url",
        "REDIS_URL",
        "--redis-url",
        "",
        _optional_redis_url,
        "Share sessions with other nodes through this Redis (redis://host:6379/0).",
    ),
    Setting(
        "node_ttl",
        "SIGNALING_NODE_TTL",
        "--node-ttl",
        "10",
        _seconds,
        "Heartbeat lifetime of a node in Redis; a dead node's participants go within 4/3 of it.",
    ),
    Setting(
        "cluster_flush_ms",
        "SIGNALING_CLUSTER_FLUSH_MS",
        "--cluster-flush-ms",
        "5",
        _milliseconds,
        "How long a signal for another node waits to share its PUBLISH with others "
        "(more: less CPU, more latency; 0: the next moment).",
    ),
    Setting(
        "max_participants",
        "SIGNALING_MAX_PARTICIPANTS",
        "--max-participants",
        "16",
        _positive_int,
        "Seats per session; one more join gets session-full.",
    ),
    Setting(
        "rate_limit",
        "SIGNALING_RATE_LIMIT",
        "--rate-limit",
        "10",
        _rate,
        "Frames per second each user may send, over all its connections; 0 turns it off.",
    ),
    Setting(
        "rate_burst",
        "SIGNALING_RATE_BURST",
        "--rate-burst",
        "50",
        _positive_int,
        "Frames a user may send at once before the rate applies (a call set-up's ICE burst).",
    ),
    Setting(
        "flood_strikes",
        "SIGNALING_FLOOD_STRIKES",
        "--flood-strikes",
        "20",
        _positive_int,
        "Refused frames, in a run of refusals lasting 1 s or more, that close a flooding "
        "connection with 4429.",
    ),
    Setting(
        "max_connections",
        "SIGNALING_MAX_CONNECTIONS",
        "--max-connections",
        "20000",
        _positive_int,
        "WebSocket connections this node accepts; beyond, upgrades get HTTP 503 server-full.",
    ),
    Setting(
        "max_connections_per_ip",
        "SIGNALING_MAX_CONNECTIONS_PER_IP",
        "--max-connections-per-ip",
        "256",
        _non_negative_int,
        "WebSocket connections from one client IP; beyond, HTTP 429 (0: no cap).",
    ),
    Setting(
        "max_connections_per_user",
        "SIGNALING_MAX_CONNECTIONS_PER_USER",
        "--max-connections-per-user",
        "10",
        _non_negative_int,
        "Connections one userId may hold; beyond, error forbidden and close 4409 (0: no cap).",
    ),
    Setting(
        "max_sessions_per_connection",
        "SIGNALING_MAX_SESSIONS_PER_CONNECTION",
        "--max-sessions-per-connection",
        "32",
        _non_negative_int,
        "Sessions one connection may sit in; one more join gets forbidden (0: no cap).",
    ),
    Setting(
        "auth_timeout",
        "SIGNALING_AUTH_TIMEOUT",
        "--auth-timeout",
        "10",
        _seconds,
        "Seconds a new connection has to send auth before close 4408.",
    ),
    Setting(
        "max_message_bytes",
        "SIGNALING_MAX_MESSAGE_BYTES",
        "--max-message-bytes",
        "65536",
        _positive_int,
        "Largest WebSocket message accepted; a larger one closes with 1009.",
    ),
    Setting(
        "permessage_deflate",
        "SIGNALING_PERMESSAGE_DEFLATE",
        "--permessage-deflate",
        "false",
        _bool,
        "Negotiate permessage-deflate on /ws (no context takeover; inflated size capped).",
    ),
    Setting(
        "outbox_frames",
        "SIGNALING_OUTBOX_FRAMES",
        "--outbox-frames",
        "512",
        _positive_int,
        "Frames queued for a client that is not reading before it is closed with 1013.",
    ),
    Setting(
        "outbox_bytes",
        "SIGNALING_OUTBOX_BYTES",
        "--outbox-bytes",
        "1048576",
        _positive_int,
        "Bytes queued for a client that is not reading before it is closed with 1013.",
    ),
    Setting(
        "ping_interval",
        "SIGNALING_PING_INTERVAL",
        "--ping-interval",
        "20",
        _seconds,
        "Seconds of silence from a client before the server pings it.",
    ),
    Setting(
        "ping_timeout",
        "SIGNALING_PING_TIMEOUT",
        "--ping-timeout",
        "20",
        _seconds,
        "Seconds a pinged client has to answer before it is closed with 4408.",
    ),
    Setting(
        "resume_window",
        "SIGNALING_RESUME_WINDOW",
        "--resume-window",
        "15",
        _window,
        "Seconds a dropped connection's seats wait for it to resume (0: off); "
        "signals for it are held meanwhile, as many as its outbox takes.",
    ),
    Setting(
        "backlog",
        "SIGNALING_BACKLOG",
        "--backlog",
        "4096",
        _positive_int,
        "TCP listen backlog (the kernel caps it at net.core.somaxconn).",
    ),
    Setting(
        "graceful_timeout",
        "SIGNALING_GRACEFUL_TIMEOUT",
        "--graceful-timeout",
        "10",
        _seconds,
        "Seconds to finish closing connections on shutdown.",
    ),
    Setting(
        "metrics_token",
        "SIGNALING_METRICS_TOKEN",
        "--metrics-token",
        "",
        str.strip,
        "Bearer token GET /metrics requires; empty leaves it open (keep it off the internet).",
    ),
    Setting(
        "log_level",
        "SIGNALING_LOG_LEVEL",
        "--log-level",
        "info",
        _log_level,
        "debug, info, warning or error (debug adds one line per ICE candidate).",
    ),
    Setting(
        "log_format",
        "SIGNALING_LOG_FORMAT",
        "--log-format",
        "text",
        _log_format,
        "text (human-readable lines) or json (one JSON object per line).",
    ),
)


_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed. Build with `load_settings`, or directly in tests."""

    host: str = "0.0.0.0"
    port: int = 3001
    certfile: str = ""
    keyfile: str = ""
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    firebase_project_id: str = ""
    firebase_certs_url: str = (
        "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
    )
    jwt_jwks_url: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_algorithms: tuple[str, ...] = ("RS256",)
    jwt_user_claim: str = "sub"
    token_secret: str = ""
    token_leeway: float = 10.0
    membership_webhook_url: str = ""
    membership_webhook_timeout: float = 2.0
    membership_cache_seconds: float = 30.0
    allowed_origins: tuple[str, ...] = ()
    allow_no_origin: bool = True
    stun_urls: tuple[str, ...] = (
        "stun:stun.l.google.com:19302",
        "stun:stun1.l.google.com:19302",
    )
    turn_provider: str = "none"
    turn_ttl: int = 86400
    cloudflare_turn_key_id: str = ""
    cloudflare_api_token: str = ""
    cloudflare_account_id: str = ""
    cloudflare_api_base_url: str = "https://rtc.live.cloudflare.com"
    turn_request_timeout: float = 5.0
    turn_refresh_margin: float = 300.0
    turn_allow_port_53: bool = False
    turn_rest_secret: str = ""
    turn_rest_urls: tuple[str, ...] = ()
    workers: int = 1
    redis_url: str = ""
    node_ttl: float = 10.0
    cluster_flush_ms: float = 5.0
    max_participants: int = 16
    max_connections: int = 20000
    max_connections_per_ip: int = 256
    max_connections_per_user: int = 10
    max_sessions_per_connection: int = 32
    rate_limit: float = 10.0
    rate_burst: int = 50
    flood_strikes: int = 20
    auth_timeout: float = 10.0
    max_message_bytes: int = 65536
    permessage_deflate: bool = False
    outbox_frames: int = 512
    outbox_bytes: int = 1048576
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    backlog: int = 4096
    graceful_timeout: float = 10.0
    resume_window: float = 15.0
    metrics_token: str = ""
    log_level: str = "INFO"
    log_format: str = "text"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


INTERNAL_VARIABLES = frozenset(
    {"SIGNALING_LISTEN_FD", "SIGNALING_WORKER_INDEX", "SIGNALING_WORKER_COUNT"}
    | {"SIGNALING_HANDOFF_DIR"}
)
"""Variables ``signaling serve --workers`` sets for its workers (not settings)."""


def unknown_variables(names: Iterable[str], *, prefixes: tuple[str, ...]) -> list[str]:
    """A warning for each of ``names`` that starts like one of our settings
    (``prefixes``) but is none, naming the closest setting."""
    import difflib

    known = [setting.env for setting in SETTINGS]
    warnings = []
    for name in names:
        if name in INTERNAL_VARIABLES or name in known or not name.startswith(prefixes):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see .env.example for the settings"
        warnings.append(f"{name} is not a setting and is ignored ({hint})")
    return warnings


# what our variables start with: a key in .env that does too is probably one mistyped
_FILE_PREFIXES = tuple(sorted({"SIGNALING_"} | {s.env.split("_")[0] + "_" for s in SETTINGS}))


def load_settings(
    flags: Mapping[str, str | None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike[str] | None = ".env",
    warnings: list[str] | None = None,
) -> Settings:
    """Settings from ``.env``, the environment and CLI flags (by setting name).

    Raises `ConfigError` naming the variable or flag and what is wrong.
    ``warnings``, when given, gets a line for each variable that looks like
    one of ours but is not (``SIGNALING_*`` in the environment; in the
    ``.env`` file, anything starting like one of our variables).
    """
    from dotenv import dotenv_values

    environ = os.environ if environ is None else environ
    file_values: dict[str, str | None] = {}
    if env_file is not None and Path(env_file).is_file():
        file_values = dotenv_values(env_file)
    if warnings is not None:
        warnings += [
            f"{env_file}: {line}"
            for line in unknown_variables(file_values, prefixes=_FILE_PREFIXES)
        ]
        warnings += unknown_variables(environ, prefixes=("SIGNALING_",))
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        source = setting.env
        text: str | None = None
        if flags is not None and flags.get(setting.name) is not None:
            text, source = flags[setting.name], setting.flag
        elif setting.env in environ:
            text = environ[setting.env]
        elif file_values.get(setting.env) is not None:
            text, source = file_values[setting.env], f"{setting.env} (in {env_file})"
        if text is None:
            text = setting.default
        try:
            values[setting.name] = setting.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{source}={text!r}: {exc}") from None
    if bool(values["certfile"]) != bool(values["keyfile"]):
        raise ConfigError("SSL_CERTFILE and SSL_KEYFILE (--certfile, --keyfile) go together")
    if values["workers"] > 1 and not values["redis_url"]:
        raise ConfigError(
            f"--workers {values['workers']} needs REDIS_URL: workers share sessions through Redis"
        )
    modes = [
        _BY_NAME[name].env
        for name in ("firebase_project_id", "jwt_jwks_url", "token_secret")
        if values[name]
    ]
    if len(modes) > 1:
        raise ConfigError(f"choose one token verifier: {' or '.join(modes)}")
    if values["jwt_jwks_url"] and not (values["jwt_issuer"] and values["jwt_audience"]):
        raise ConfigError("JWT_JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE")
    required = {
        "cloudflare": ("cloudflare_turn_key_id", "cloudflare_api_token"),
        "rest": ("turn_rest_secret", "turn_rest_urls"),
    }.get(values["turn_provider"], ())
    missing = [_BY_NAME[name].env for name in required if not values[name]]
    if missing:
        raise ConfigError(f"TURN_PROVIDER={values['turn_provider']} needs {' and '.join(missing)}")
    return Settings(**values)


def env_example() -> str:
    """The text of ``.env.example``: every variable with its default."""
    lines = ["# signaling settings: every variable with its default.", ""]
    for setting in SETTINGS:
        lines.append(f"# {setting.help} (flag: {setting.flag})")
        lines.append(f"{setting.env}={setting.default}")
        lines.append("")
    return "\n".join(lines)
