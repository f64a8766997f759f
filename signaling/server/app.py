"""The Quart (trio) application: HTTP routes and the ASGI ``/ws`` route.

`create_app` is also the app factory for plain hypercorn deployments (it then
reads its settings and configures logging as ``signaling serve`` does, see
`settings_for_asgi_server`)::

    hypercorn -k trio -c python:signaling.server.hypercorn_config \\
        'signaling.server.app:create_app()'

There ``/ws`` goes through hypercorn's own WebSocket path (wsproto, and
permessage-deflate whenever a browser offers it): it works the same but costs
several times the memory and CPU of ``signaling serve``'s lean path.
"""

from __future__ import annotations

import datetime
import hmac
import html
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector
from quart import Response, has_request_context, jsonify, request, send_file, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..codec import CLIENT_CODECS, JSON_SUBPROTOCOL
from ..errors import SignalingError
from ..frames import USER_ID_MAX_LENGTH
from .config import ConfigError, Settings, load_settings
from .handshake import Refusal, client_ip, negotiate, origin_allowed, origin_refusal
from .hub import Hub
from .logs import configure_logging, label_process
from .metrics import MetricsCollector
from .transports.asgi import OPENING, AsgiTransport, keep_close_codes, watch_hypercorn_frames
from .transports.polling import PollingChannel
from .transports.socketio import SocketIOTransport
from .transports.ws import Reactor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


__all__ = ["create_app"]

BODY_TIMEOUT = 10
"""Seconds an HTTP request body may take to arrive."""


def _json_error(status: int, error: str, message: str) -> Response:
    response = jsonify({"error": error, "message": message})
    response.status_code = status
    return response


def _utc_now_iso() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def asgi_server_workers() -> int:
    """How many worker processes the ASGI server that imported us runs (1 if unknown).

    hypercorn starts each worker as a ``multiprocessing`` process whose target
    gets the server's ``Config``: its ``workers`` is the count after the
    command line's ``-w``.
    """
    kwargs = getattr(multiprocessing.current_process(), "_kwargs", None) or {}
    workers = getattr(kwargs.get("config"), "workers", 1)
    return workers if isinstance(workers, int) and workers > 0 else 1


def settings_for_asgi_server() -> Settings:
    """Settings for `create_app()` under plain hypercorn, as ``signaling serve`` would
    take them: from ``.env`` and the environment, logging configured the same
    way, and a setting that cannot work refused in one line (``SystemExit``,
    which hypercorn's worker ends on, and hypercorn with it)."""
    warnings: list[str] = []
    try:
        settings = load_settings(warnings=warnings)
        workers = asgi_server_workers()
        if workers > 1 and not settings.redis_url:
            raise ConfigError(
                f"{workers} hypercorn workers need REDIS_URL: without it each worker "
                "has its own sessions and users in different workers never meet "
                "(use -w 1, or `signaling serve --workers N` with REDIS_URL)"
            )
    except ConfigError as exc:
        raise SystemExit(f"signaling: configuration error: {exc}") from None
    configure_logging(settings.log_level, settings.log_format)
    if workers > 1:
        label_process(worker=str(os.getpid()))
    for warning in warnings:
        logging.getLogger("signaling.config").warning("%s", warning)
    return settings


def create_app(
    settings: Settings | None = None,
    *,
    hub: Hub | None = None,
    asgi_websocket: bool = True,
    polling: dict[str, PollingChannel] | None = None,
) -> QuartTrio:
    """The application; settings come from the environment and ``.env`` when omitted.

    ``asgi_websocket``: serve ``/ws`` through the ASGI server's own WebSocket
    path (plain hypercorn); ``signaling serve`` turns it off, its front door
    serving every WebSocket itself. ``polling``: the Engine.IO long-polling
    sessions by sid (``signaling serve`` shares the table with its front door,
    which upgrades them).
    """
    polling = {} if polling is None else polling
    if hub is None:
        factory = settings is None  # plain hypercorn: `create_app()` in each worker
        hub = Hub(settings if settings is not None else settings_for_asgi_server())
        if factory and hub.cluster is not None:
            label_process(node=hub.cluster.node)
    app = QuartTrio("signaling")
    app.config["JSONIFY_PRETTYPRINT_REGULAR"] = False
    # HTTP bodies: no route takes more than a message (Engine.IO batches included),
    # checked as the body arrives, and a body must arrive whole within the same
    # time as a request head (a trickled body is cut off with 408)
    app.config["MAX_CONTENT_LENGTH"] = hub.settings.max_message_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    app.extensions["signaling.hub"] = hub

    @app.before_serving
    async def start_background() -> None:
        await app.nursery.start(hub.serve_heartbeat)
        await app.nursery.start(hub.serve_resumes)
        if hub.cluster is not None:
            await app.nursery.start(hub.cluster.serve, Reactor.current().after_round)

    settings = hub.settings

    @app.before_request
    async def preflight() -> Response | None:
        """CORS preflight: answered here for every route."""
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        origin = request.headers.get("Origin")
        if not origin or not origin_allowed(origin, settings.allowed_origins):
            return _json_error(403, "origin-not-allowed", f"origin {origin!r} is not allowed")
        response = Response("", status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    @app.after_request
    async def cors(response: Response) -> Response:
        """CORS headers for allowed origins; none for others (the browser then blocks)."""
        origin = request.headers.get("Origin")
        if origin and origin_allowed(origin, settings.allowed_origins):
            allowed_any = not settings.allowed_origins or "*" in settings.allowed_origins
            response.headers["Access-Control-Allow-Origin"] = "*" if allowed_any else origin
            response.vary.add("Origin")
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        name = (error.name or "error").lower().replace(" ", "-")
        if error.code == 404:  # in our words, not Werkzeug's
            return _json_error(
                404,
                "not-found",
                f"no such endpoint: {request.path!r}; see {request.host_url} for the demo and "
                "the endpoints: /ws, /socket.io/, /health, /metrics, /turn/credentials",
            )
        return _json_error(error.code or 500, name, error.description or name)

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        where = f"{request.method} {request.path}" if has_request_context() else websocket.path
        app.logger.error("unhandled error in %s", where, exc_info=error)
        return _json_error(500, "internal", "internal server error")

    metrics_registry = CollectorRegistry(auto_describe=False)
    metrics_registry.register(
        MetricsCollector(hub.stats, hub.registry, hub.connections, hub.ice, hub.resumes)
    )
    ProcessCollector(registry=metrics_registry)

    @app.get("/metrics")
    async def metrics() -> Any:
        token = hub.settings.metrics_token
        if token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                response = _json_error(401, "unauthorized", "GET /metrics needs the metrics token")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return Response(generate_latest(metrics_registry), content_type=CONTENT_TYPE_LATEST)

    @app.after_serving
    async def drain() -> None:
        hub.close_all(1001, "server shutting down")
        await hub.aclose()

    static = Path(__file__).resolve().parent.parent / "static"

    @app.get("/")
    async def demo() -> Any:
        return await send_file(static / "index.html", mimetype="text/html")

    @app.get("/ws")
    async def ws_over_plain_http() -> Any:
        """``/ws`` opened as a page (a browser tab, curl): say what it is."""
        message = (
            "/ws is a WebSocket endpoint: open it with "
            "new WebSocket('ws://HOST/ws', 'signaling.v1.json') (wss:// over TLS); "
            "the demo page at / shows it working"
        )
        if "text/html" in request.headers.get("Accept", ""):
            page = (
                "<!doctype html><meta charset=utf-8><title>signaling /ws</title>"
                f"<p>{html.escape(message.replace('HOST', request.host))}.</p>"
                "<p><a href='/'>The demo</a></p>"
            )
            response = Response(page, status=426, content_type="text/html; charset=utf-8")
        else:
            response = _json_error(426, "upgrade-required", message.replace("HOST", request.host))
        response.headers["Upgrade"] = "websocket"
        return response

    @app.get("/favicon.ico")
    async def favicon() -> Any:
        """No icon, and no 404 in the browser's console for it."""
        return Response("", status=204, headers={"Cache-Control": "max-age=86400"})

    @app.get("/client.js")
    async def client_module() -> Any:
        return await send_file(static / "signaling-client.js", mimetype="text/javascript")

    @app.get("/client.d.ts")
    async def client_types() -> Any:
        return await send_file(static / "signaling-client.d.ts", mimetype="text/plain")

    @app.route("/socket.io/", methods=["GET", "POST"])
    async def engine_io() -> Any:
        """Engine.IO v4 HTTP long-polling for socket.io-client's default transport."""
        if request.args.get("EIO") != "4" or request.args.get("transport") != "polling":
            return _json_error(
                400, "bad-request", "Engine.IO 4 (socket.io-client 3 or 4) over polling expected"
            )
        sid = request.args.get("sid")
        if sid is not None:
            # the Origin rule holds for every request of a session (the first: negotiate)
            denied = origin_refusal(
                request.headers.get("Origin"),
                settings.allowed_origins,
                allow_missing_origin=settings.allow_no_origin,
            )
            if denied is not None:
                hub.stats.upgrades_refused[denied.error] += 1
                return _json_error(denied.status, denied.error, denied.message)
        if sid is None:
            if request.method != "GET":
                return _json_error(400, "bad-request", "a new Engine.IO session starts with GET")
            # the same client-IP rule as /ws: X-Forwarded-For only from trusted proxies
            ip = client_ip(
                str(request.remote_addr),
                request.headers.getlist("X-Forwarded-For"),
                settings.trusted_proxies,
            )
            refusal = hub.admit(ip) or negotiate(
                [],
                request.headers.get("Origin"),
                settings.allowed_origins,
                allow_missing_origin=settings.allow_no_origin,
            )
            if isinstance(refusal, Refusal):
                hub.stats.upgrades_refused[refusal.error] += 1
                return _json_error(refusal.status, refusal.error, refusal.message)
            channel = PollingChannel(
                hub.make_sid(),
                max_packets=settings.outbox_frames,
                max_bytes=settings.outbox_bytes,
            )
            transport = SocketIOTransport(
                channel,
                ping_interval=settings.ping_interval,
                ping_timeout=settings.ping_timeout,
                max_payload=settings.max_message_bytes,
            )
            connection = hub.open(transport, CLIENT_CODECS[JSON_SUBPROTOCOL], ip, ip)
            polling[channel.sid] = channel

            async def run() -> None:
                try:
                    await connection.run()
                finally:
                    polling.pop(channel.sid, None)

            app.nursery.start_soon(run)
            body = await channel.poll(settings.ping_interval)
            return Response(body, content_type="text/plain; charset=UTF-8")
        known = polling.get(sid)
        if known is None:
            return _json_error(400, "session-unknown", "unknown Engine.IO session id")
        if request.method == "POST":
            data = await request.get_data()
            try:
                text = data.decode("utf-8") if isinstance(data, bytes) else data
            except UnicodeDecodeError:
                return _json_error(400, "bad-request", "an Engine.IO payload is UTF-8 text")
            if not known.post(text):
                return _json_error(429, "too-many-packets", "packets are waiting to be read")
            return Response("ok", content_type="text/plain; charset=UTF-8")
        if known.polling:
            return _json_error(400, "bad-request", "one GET at a time per Engine.IO session")
        body = await known.poll(settings.ping_interval)
        return Response(body, content_type="text/plain; charset=UTF-8")

    @app.get("/health")
    async def health() -> Any:
        if hub.draining:
            return {"status": "draining", "timestamp": _utc_now_iso()}, 503
        if hub.cluster is not None and not hub.cluster.healthy:
            # still serving its own sessions: keep it in the pool, but say so
            return {"status": "degraded", "redis": "unreachable", "timestamp": _utc_now_iso()}
        return {"status": "ok", "timestamp": _utc_now_iso()}

    @app.post("/turn/credentials")
    async def turn_credentials() -> Any:
        if hub.authenticator.verifies_tokens:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                response = _json_error(
                    401, "unauthorized", "POST /turn/credentials needs Authorization: Bearer"
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            try:
                identity = await hub.authenticator.verify_bearer(token.strip())
            except SignalingError as exc:
                return _json_error(401, "unauthorized", exc.message)
            user_id: str | None = identity.user_id
        else:
            # Development mode: the caller may name itself (?userId= or {"userId": …});
            # with token verification the user comes from the token instead.
            user_id = request.args.get("userId")
            if user_id is None and request.is_json:
                body = await request.get_json(silent=True)
                if isinstance(body, dict) and isinstance(body.get("userId"), str):
                    user_id = body["userId"]
            if user_id is not None and not 0 < len(user_id) <= USER_ID_MAX_LENGTH:
                return _json_error(400, "bad-request", "userId must be 1 to 128 characters")
        servers = await hub.ice.ice_servers(user_id)
        return {
            "iceServers": msgspec.to_builtins(servers),
            "timestamp": int(time.time() * 1000),
        }

    if asgi_websocket:
        watch_hypercorn_frames()
        app.asgi_app = keep_close_codes(app.asgi_app)  # type: ignore[method-assign]
        app.websocket("/ws")(_asgi_ws(hub))
    return app


def _asgi_ws(hub: Hub) -> Callable[[], Awaitable[Any]]:
    """The ``/ws`` route for plain hypercorn: the same caps, origins and IP rule as ours."""
    settings = hub.settings

    async def ws() -> Any:
        ip = client_ip(
            str(websocket.remote_addr),
            websocket.headers.getlist("X-Forwarded-For"),
            settings.trusted_proxies,
        )
        negotiated = hub.admit(ip) or negotiate(
            websocket.requested_subprotocols,
            websocket.headers.get("Origin"),
            hub.settings.allowed_origins,
            allow_missing_origin=hub.settings.allow_no_origin,
        )
        if isinstance(negotiated, Refusal):
            hub.stats.upgrades_refused[negotiated.error] += 1
            return _json_error(negotiated.status, negotiated.error, negotiated.message)
        codec, subprotocol = negotiated
        ws_object = websocket._get_current_object()  # type: ignore[attr-defined]
        transport = AsgiTransport(ws_object, text=codec.text)
        connection = hub.open(transport, codec, ip, ip)
        token = OPENING.set(transport)
        try:
            await websocket.accept(subprotocol=subprotocol)
        except BaseException:
            hub.remove(connection)
            raise
        finally:
            OPENING.reset(token)
        await connection.run()
        return None

    return ws
