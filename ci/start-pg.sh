#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 cluster with pgvector for the tests (idempotent; 1-4 s):
# trust auth, loopback only, port $PGPORT (54329), data under $RMAC_PG_BASE (default ${TMPDIR:-/tmp}/rmac-pg),
# durability off (it is thrown away). Prints the connection string on its last line:
#   export RMAC_PG=$(bash ci/start-pg.sh | tail -1)
# Needs PostgreSQL 15 and pgvector installed (ci/setup-deps.sh). As root the server runs as `postgres`;
# as another user it runs as that user.  Stop it with ci/stop-pg.sh.
set -euo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BASE=${RMAC_PG_BASE:-${TMPDIR:-/tmp}/rmac-pg}
PGPORT=${PGPORT:-54329}
if [ ! -x "$PGBIN/initdb" ]; then
  echo "start-pg.sh: no PostgreSQL 15 at $PGBIN; run ci/setup-deps.sh (apt: postgresql postgresql-server-dev-15)" >&2
  exit 1
fi
if [ ! -f "$("$PGBIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)/vector.so" ]; then
  echo "start-pg.sh: pgvector is not installed for PostgreSQL 15; run ci/setup-deps.sh" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then AS=(runuser -u postgres --); else AS=(); fi
if [ -f "$BASE/data/PG_VERSION" ] && "${AS[@]}" "$PGBIN/pg_ctl" -D "$BASE/data" status >/dev/null 2>&1; then
  :
else
  rm -rf "$BASE"
  mkdir -p "$BASE/sock"
  [ "$(id -u)" -ne 0 ] || chown -R postgres:postgres "$BASE"
  "${AS[@]}" "$PGBIN/initdb" -D "$BASE/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$BASE/data" -l "$BASE/pg.log" -w -t 60 \
    -o "-p $PGPORT -k $BASE/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100" \
    start >/dev/null || { cat "$BASE/pg.log" >&2; exit 1; }
fi
"${AS[@]}" env PGOPTIONS=--client-min-messages=warning "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -qAt \
  -c "CREATE EXTENSION IF NOT EXISTS vector" >/dev/null
echo "host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"
