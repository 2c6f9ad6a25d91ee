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
# The S3 server and the Redis of this $LAB, by their pidfiles: each is
# stopped only if the pid is still that program.
LAB=${LAB:-$ROOT/.ci/tmp}
stop_pidfile() {
  local name=$1 f=$2 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$name"; then
    kill "$pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
}
stop_pidfile versitygw "$LAB/s3.pid"
stop_pidfile redis-server "$LAB/redis.pid"
if [ -f "$LAB/s3.dir" ]; then
  d=$(cat "$LAB/s3.dir")
  case "$d" in "$LAB/s3"|/tmp/mito-ci-s3-[0-9]*) rm -rf "$d" ;; esac   # only where up put it
  rm -f "$LAB/s3.dir"
fi
rm -rf "$LAB/redis"
true
