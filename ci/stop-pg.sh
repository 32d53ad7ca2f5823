#!/usr/bin/env bash
# Stops the throwaway cluster of ci/start-pg.sh and removes its data (idempotent).
set -uo pipefail
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BASE=${RMAC_PG_BASE:-${TMPDIR:-/tmp}/rmac-pg}
if [ "$(id -u)" -eq 0 ]; then AS=(runuser -u postgres --); else AS=(); fi
if [ -f "$BASE/data/PG_VERSION" ]; then
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$BASE/data" -m fast -w stop >/dev/null 2>&1 || true
fi
[ -n "${RMAC_PG_KEEP:-}" ] || rm -rf "$BASE"
