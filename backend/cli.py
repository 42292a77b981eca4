"""`todo-api`: serve the API, migrate the database, mint a development token."""

import argparse
import math
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from pydantic import ValidationError

from backend.config import DatabaseSettings, Settings, describe_validation_error, get_settings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="todo-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")

    commands.add_parser("migrate", help="bring the database to the latest schema")

    token = commands.add_parser("token", help="print an HS256 token signed with BETTER_AUTH_SECRET")
    token.add_argument("--user-id", required=True)
    token.add_argument("--email")
    token.add_argument("--name")
    token.add_argument("--minutes", type=int, default=60, help="lifetime (default 60)")

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args.host, args.port, args.workers, args.reload)
        if args.command == "migrate":
            return _migrate()
        return _token(args.user_id, args.email, args.name, args.minutes)
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        return 2


def _serve(host: str, port: int, workers: int, reload: bool) -> int:
    import uvicorn

    from backend.request_log import logging_config

    settings = get_settings()  # fail here, in one line, rather than in every worker
    uvicorn.run(
        "backend.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
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


def _migrate() -> int:
    command.upgrade(alembic_config(DatabaseSettings().database_url), "head")
    print("database is at the latest schema", file=sys.stderr)
    return 0


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def _token(user_id: str, email: str | None, name: str | None, minutes: int) -> int:
    from backend.security import issue_token

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
