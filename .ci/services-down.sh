#!/usr/bin/env bash
# Stop what services-up.sh started, and nothing else. Safe to run twice.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The sshd hosts of this $LAB, their network namespaces and veths.
bash "$ROOT/.ci/ssh-hosts.sh" down
PGPORT=${MITO_CI_PGPORT:-5433}
PGD=/tmp/mito-ci-pg-$PGPORT
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
if [ -f "$PGD/data/postmaster.pid" ]; then
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $PGD/data -m fast stop" >/dev/null 2>&1
  else "$PGBIN/pg_ctl" -D "$PGD/data" -m fast stop >/dev/null 2>&1; fi
fi
rm -rf "$PGD"
true
