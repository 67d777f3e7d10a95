# shellcheck shell=bash
# A private PostgreSQL on loopback, for scripts/test.sh and scripts/bench.sh (sourced).
# The caller defines PGBIN, log, die and free_port; these set PGDIR, PG_PORT, PG_STARTED.

PGDIR=""
PG_PORT=""
PG_STARTED=0

# start_private_postgres DIR_PREFIX "SERVER_OPTIONS" [INITDB_ARGS...]
# initdb as the postgres user in a new /tmp/DIR_PREFIX.XXXXXX, then start the server on a
# free loopback port (a few attempts: another process may take the port first).
start_private_postgres() {
  local prefix=$1 opts=$2
  shift 2
  [[ -x $PGBIN/initdb ]] || die "$PGBIN/initdb not found"
  id postgres >/dev/null 2>&1 || die "no postgres user"
  PGDIR=$(mktemp -d "/tmp/$prefix.XXXXXX")
  chown postgres:postgres "$PGDIR"
  chmod 700 "$PGDIR"
  (cd / && runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 \
    --locale=C "$@" >"$PGDIR/initdb.log" 2>&1) || {
    cat "$PGDIR/initdb.log" >&2
    die "initdb failed"
  }
  local attempt
  for attempt in 1 2 3 4 5; do
    PG_PORT=$(free_port)
    if (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 $opts" start >/dev/null 2>&1); then
      PG_STARTED=1
      log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
      return 0
    fi
    log "PostgreSQL did not start on port $PG_PORT (attempt $attempt)"
    tail -n 5 "$PGDIR/server.log" >&2 2>/dev/null || true
  done
  die "PostgreSQL would not start"
}

# Stops the server (if it started) and removes its directory.
stop_private_postgres() {
  if [[ $PG_STARTED -eq 1 ]]; then
    log "stopping PostgreSQL"
    (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -t 60 stop >/dev/null 2>&1) ||
      log "WARNING: pg_ctl stop failed"
    PG_STARTED=0
  fi
  [[ -n $PGDIR && -d $PGDIR ]] && rm -rf "$PGDIR"
  PGDIR=""
}
