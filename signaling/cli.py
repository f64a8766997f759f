"""The ``signaling`` command: ``serve``, ``schema``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

__all__ = ["main"]


def _serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .server.config import SETTINGS

    serve = subparsers.add_parser(
        "serve",
        help="run the server (HTTP and /ws on one port)",
        description="Run the signaling server. Each flag overrides its environment variable.",
        allow_abbrev=False,  # a shortened or mistyped flag is an error, not a guess
    )
    for setting in SETTINGS:
        serve.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.env,
            help=f"{setting.help} Default: {setting.default or '(empty)'}.",
        )
    serve.add_argument(
        "--env-file",
        default=None,
        help="a .env file to read; it must exist (default: .env when there is one)",
    )


def _run_serve(args: argparse.Namespace, argv: list[str] | None) -> int:
    import os

    import trio

    from .server.config import ConfigError, load_settings
    from .server.logs import configure_logging
    from .server.serve import serve, ssl_context, tune_gc

    warnings: list[str] = []
    try:
        if args.env_file is not None and not Path(args.env_file).is_file():
            raise ConfigError(f"--env-file {args.env_file!r}: no such file")
        settings = load_settings(vars(args), env_file=args.env_file or ".env", warnings=warnings)
        ssl_context(settings)  # a certificate that cannot load stops us before anything else
    except ConfigError as exc:
        print(f"signaling: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if os.environ.get("SIGNALING_LISTEN_FD") is None:  # once, not once per worker
        for warning in warnings:
            logging.getLogger("signaling.config").warning("%s", warning)
    listen_fd = os.environ.get("SIGNALING_LISTEN_FD")
    if settings.workers > 1 and listen_fd is None:
        from .server.workers import supervise

        try:
            return supervise(settings, sys.argv[1:] if argv is None else argv)
        except OSError as exc:
            print(
                f"signaling: cannot listen on {settings.host}:{settings.port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
    sock = None
    if listen_fd is not None:
        import socket

        sock = socket.socket(fileno=int(listen_fd))
    if listen_fd is None and not (
        settings.firebase_project_id or settings.jwt_jwks_url or settings.token_secret
    ):
        logging.getLogger("signaling").warning(
            "development auth: every client is trusted as the userId it sends; "
            "set FIREBASE_PROJECT_ID, JWT_JWKS_URL or SIGNALING_TOKEN_SECRET in production"
        )

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def shutdown_trigger() -> None:
                async for signum in signals:
                    logging.getLogger("signaling").info("%s received", signal.Signals(signum).name)
                    return

            await serve(settings, shutdown_trigger=shutdown_trigger, sock=sock)

    tune_gc()
    try:
        trio.run(main)
    except ConfigError as exc:
        print(f"signaling: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"signaling: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_schema(args: argparse.Namespace) -> int:
    from .schema import schema_text

    text = schema_text()
    if args.check:
        current = Path(args.output).read_text() if Path(args.output).exists() else ""
        if current != text:
            print(
                f"signaling: {args.output} is out of date; run 'signaling schema'", file=sys.stderr
            )
            return 1
        return 0
    Path(args.output).write_text(text)
    print(f"wrote {args.output}")
    return 0


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds or e.g. 10m, 2h") from None


def _run_token(args: argparse.Namespace) -> int:
    import os

    from dotenv import dotenv_values

    from .server.auth import mint_join_token

    secret = args.secret or os.environ.get("SIGNALING_TOKEN_SECRET")
    if not secret and Path(".env").is_file():
        secret = dotenv_values(".env").get("SIGNALING_TOKEN_SECRET")
    if not secret or len(secret) < 32:
        print(
            "signaling: token needs SIGNALING_TOKEN_SECRET (or --secret), 32+ characters",
            file=sys.stderr,
        )
        return 2
    sessions: list[str] | str = "*" if "*" in args.session else list(args.session)
    print(mint_join_token(secret, args.user, sessions, args.ttl))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``signaling`` console script."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="signaling", description="WebRTC signaling server")
    parser.add_argument("--version", action="version", version=f"signaling {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _serve_parser(subparsers)
    schema = subparsers.add_parser("schema", help="write protocol/schema.json from the frames")
    schema.add_argument("--output", default="protocol/schema.json")
    schema.add_argument("--check", action="store_true", help="fail if the file is out of date")
    token = subparsers.add_parser(
        "token", help="mint a signed join token (SIGNALING_TOKEN_SECRET) for development"
    )
    token.add_argument("--user", required=True, help="the userId (sub)")
    token.add_argument(
        "--session", action="append", required=True, help="a sessionId it may join ('*': any)"
    )
    token.add_argument("--ttl", type=_duration, default=600.0, help="lifetime: 600, 10m, 2h")
    token.add_argument("--secret", help="the secret (default: SIGNALING_TOKEN_SECRET)")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # the command's own usage (its flags), not the top-level one
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "serve":
        return _run_serve(args, argv)
    if args.command == "token":
        return _run_token(args)
    return _run_schema(args)


if __name__ == "__main__":
    sys.exit(main())
