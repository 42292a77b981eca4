#!/bin/sh
# The stand-in for the official postgres image that `make image-test` builds where no
# registry can be reached: the part of its entrypoint compose.yaml relies on (a database
# and a password-protected user from POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB,
# created on the first start in an empty volume), with Debian's PostgreSQL 15.
set -eu
bin=$(echo /usr/lib/postgresql/*/bin)
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 700 "$PGDATA" /run/postgresql
  password=$(mktemp)
  printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}" > "$password"
  chown postgres "$password"
  as_postgres "$bin/initdb" --username="$user" --pwfile="$password" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  rm -f "$password"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "${POSTGRES_DB:-$user}" != postgres ]; then
    as_postgres "$bin/postgres" --single -D "$PGDATA" postgres <<SQL >/dev/null
CREATE DATABASE "${POSTGRES_DB:-$user}" OWNER "$user";
SQL
  fi
fi
install -d -o postgres -g postgres /run/postgresql
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -c listen_addresses='*' "$@"
