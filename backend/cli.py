"""`todo-api`: serve the API, migrate the database, mint a development token."""

import argparse
import asyncio
import errno
import math
import socket
import sys
from collections.abc import Sequence
from datetime import timedelta

from alembic import command
from pydantic import ValidationError

from backend.config import DatabaseSettings, Settings, describe_validation_error, get_settings
from backend.store.schema import alembic_config, check_schema


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="todo-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    serve.add_argument("--migrate", action="store_true", help="bring the database to the latest schema first")

    commands.add_parser("migrate", help="bring the database to the latest schema")

    token = commands.add_parser("token", help="print an HS256 token signed with BETTER_AUTH_SECRET")
    token.add_argument("--user-id", required=True)
    token.add_argument("--email")
    token.add_argument("--name")
    token.add_argument("--minutes", type=int, default=60, help="lifetime (default 60)")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.host, args.port, args.workers, args.reload, args.migrate)
        if args.command == "migrate":
            return _migrate()
        return _token(args.user_id, args.email, args.name, args.minutes)
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        return 2


def _serve(host: str, port: int, workers: int, reload: bool, migrate: bool) -> int:
    # Before anything else: uvicorn would start the app, say "startup complete",
    # and only then fail to bind.
    if (problem := _cannot_listen(host, port)) is not None:
        print(problem, file=sys.stderr)
        return 1
    settings = get_settings()  # fail here, in one line, rather than in every worker
    if migrate:
        _migrate()
    # Refuse a schema older than this code (its queries would fail on every request), in
    # one line naming the fix; replicas never migrate on their own, so they never race.
    if (problem := _schema_problem(settings)) is not None:
        print(problem, file=sys.stderr)
        return 1

    import uvicorn

    from backend.edge.access_log import logging_config
    from backend.edge.protocol import allow_open_files

    cap = allow_open_files(settings.max_connections)
    if cap < settings.max_connections:
        print(
            f"warning: the open-file limit allows {cap} connections per worker, "
            f"not MAX_CONNECTIONS={settings.max_connections}; raise it with `ulimit -n`",
            file=sys.stderr,
        )
    if settings.docs_enabled:
        print(f"API docs: http://{host}:{port}/docs", file=sys.stderr)
    uvicorn.run(
        "backend.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        # httptools with the bounds of `backend.edge.protocol` (head size and time, connections).
        http="backend.edge.protocol:EdgeProtocol",
        # The API has no WebSocket routes: upgrades are answered as plain HTTP.
        ws="none",
        log_config=logging_config(settings.log_level),
        log_level=settings.log_level,
        access_log=False,  # replaced by our own line per request
        proxy_headers=True,
        # No `server: uvicorn`: it tells a scanner what to try, and a client nothing.
        server_header=False,
        # On SIGTERM: stop accepting, let in-flight requests finish (none outlives
        # the request deadline), then close the pool in the lifespan.
        timeout_graceful_shutdown=math.ceil(settings.request_timeout_seconds) + 5,
    )
    return 0


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port, in one line, or None if it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"error: cannot listen on {host}:{port}: {error.strerror}"
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a previous run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return (
                    f"error: port {port} on {host} is already in use (another server running?); "
                    f"stop it, or choose another port: make run PORT={port + 1}"
                )
            return f"error: cannot listen on {host}:{port}: {error.strerror}"
    return None


def _schema_problem(settings: Settings) -> str | None:
    try:
        check = asyncio.run(
            check_schema(settings.database_url, timeout_seconds=settings.database_timeout_seconds)
        )
    except Exception as error:
        # A database that does not answer yet must not keep the server down: it starts,
        # /ready answers 503 until the database does, and the orchestrator waits.
        print(
            f"warning: could not check the database schema ({type(error).__name__}: {error}); "
            "starting anyway, /ready reports the database",
            file=sys.stderr,
        )
        return None
    if check.unknown:
        print(
            f"warning: the database was migrated by a newer release ({', '.join(sorted(check.unknown))}); "
            "starting, as the release before a migration must during a rolling deploy",
            file=sys.stderr,
        )
    return check.problem()


def _migrate() -> int:
    command.upgrade(alembic_config(DatabaseSettings().database_url), "head")
    print("database is at the latest schema", file=sys.stderr)
    return 0


def _token(user_id: str, email: str | None, name: str | None, minutes: int) -> int:
    from backend.auth.tokens import issue_token

    settings: Settings = get_settings()
    if settings.better_auth_secret is None:
        print("configuration error: BETTER_AUTH_SECRET must be set to sign tokens", file=sys.stderr)
        return 2
    print(
        issue_token(
            settings.better_auth_secret.get_secret_value(),
            user_id,
            email=email,
            name=name,
            lifetime=timedelta(minutes=minutes),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
