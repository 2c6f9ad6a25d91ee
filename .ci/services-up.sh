#!/usr/bin/env bash
# Start the services the tests need, on ports of their own, and write their
# addresses to $LAB/env: a PostgreSQL, an S3 server (versitygw), a Redis,
# and (as root) five OpenSSH sshd hosts, three on loopback and two in
# network namespaces (see ssh-hosts.sh). It installs what is missing on a
# fresh Debian machine (as root), never touches a service it did not start,
# and is safe to run twice. Stop them with services-down.sh.
#
# Ports: MITO_CI_PGPORT (5433), MITO_CI_S3PORT (7071), MITO_CI_REDISPORT
# (6391). $LAB/env holds the S3 secret key, so it is mode 0600.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$ROOT/.ci/tmp}
PGPORT=${MITO_CI_PGPORT:-5433}
S3PORT=${MITO_CI_S3PORT:-7071}
REDISPORT=${MITO_CI_REDISPORT:-6391}
mkdir -p "$LAB"
t0=$(date +%s)
say() { echo "[services] $* ($(( $(date +%s) - t0 ))s)"; }

# --- packages -------------------------------------------------------------
# openssh-server only as root: without root there are no sshd hosts anyway.
need=""
pkgs=postgresql
[ "$(id -u)" = 0 ] && pkgs="$pkgs openssh-server"
command -v redis-server >/dev/null || pkgs="$pkgs redis-server"
for p in $pkgs; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || need="$need $p"
done
if [ -n "$need" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "[services] missing Debian packages:$need; run as root or install them" >&2
    exit 1
  fi
  say "installing$need"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need >/dev/null
fi

# --- PostgreSQL: a private cluster under /tmp (the postgres user cannot
# traverse /root, where a CI clone may live) -------------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -x "$PGBIN/initdb" ] || { echo "[services] PostgreSQL server binaries not found under /usr/lib/postgresql" >&2; exit 1; }
PGD=/tmp/mito-ci-pg-$PGPORT
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
if [ -f "$PGD/data/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl -D $PGD/data -m immediate stop" >/dev/null 2>&1 || true; fi
rm -rf "$PGD"
mkdir -p "$PGD"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PGD"
as_pg "$PGBIN/initdb -D $PGD/data -U postgres --auth=trust -E UTF8 --no-sync" >"$LAB/pg-initdb.log"
as_pg "$PGBIN/pg_ctl -D $PGD/data -l $PGD/log -w -o '-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGD -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200' start" >/dev/null
psql -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE mito" >/dev/null
say "postgres on 127.0.0.1:$PGPORT"

cat > "$LAB/env" <<ENV
export LAB='$LAB'
export MITO_TEST_PG_URL='postgres://postgres@127.0.0.1:$PGPORT/mito?sslmode=disable'
ENV

# --- S3 (versitygw, posix backend) and Redis, on loopback; each stopped
# by its pidfile in $LAB, so a run stops only what it started -------------

# stop_pidfile NAME FILE: stop the process FILE names if it is still NAME
# (not an unrelated process that reused the pid), then remove FILE.
stop_pidfile() {
  local name=$1 f=$2 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "$name"; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
# port_free PORT: fail unless nothing listens on 127.0.0.1:PORT.
port_free() {
  local a
  for a in "127.0.0.1:$1" "0.0.0.0:$1" "[::]:$1" "*:$1"; do
    if ss -Hltn 2>/dev/null | awk '{print $4}' | grep -qxF "$a"; then
      echo "[services] port $1 is in use (by a service this run did not start); choose another with $2" >&2
      exit 1
    fi
  done
}
# answers PORT REQUEST WANT: whether 127.0.0.1:PORT replies to REQUEST with
# a reply starting with WANT (a protocol answer, not just a connect).
answers() {
  local got
  got=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf '$2' >&3 && head -c ${#3} <&3" 2>/dev/null || true)
  [ "$got" = "$3" ]
}
# wait_up NAME PIDFILE PORT REQUEST WANT LOG
wait_up() {
  local i pid
  for i in $(seq 100); do
    answers "$3" "$4" "$5" && return 0
    pid=$(cat "$2" 2>/dev/null || true)
    if [ "$i" -gt 10 ] && { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; }; then break; fi
    sleep 0.1
  done
  echo "[services] $1 did not answer on 127.0.0.1:$3; its log:" >&2
  tail -n 20 "$6" >&2 2>/dev/null || true
  exit 1
}

stop_pidfile versitygw "$LAB/s3.pid"
stop_pidfile redis-server "$LAB/redis.pid"
if [ -f "$LAB/s3.dir" ]; then   # the data of this $LAB's last run
  d=$(cat "$LAB/s3.dir")
  case "$d" in "$LAB/s3"|/tmp/mito-ci-s3-[0-9]*) rm -rf "$d" ;; esac
fi
port_free "$S3PORT" MITO_CI_S3PORT
port_free "$REDISPORT" MITO_CI_REDISPORT

# versitygw: built once into $(go env GOPATH)/bin (~5 minutes cold).
VGW=$(go env GOPATH)/bin/versitygw
if [ ! -x "$VGW" ]; then
  say "building versitygw v1.8.0 (a few minutes, once)"
  (cd / && GOBIN=$(dirname "$VGW") GOFLAGS=-mod=mod go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)
fi
# The posix backend keeps object metadata in user xattrs: use $LAB/s3 if its
# file system has them, else /tmp (a CI clone may live where they are off).
S3D=$LAB/s3
mkdir -p "$S3D"
xattrs_ok() {
  local f=$1/.xattr-probe ok=1
  : >"$f"
  if command -v setfattr >/dev/null; then setfattr -n user.mito -v 1 "$f" 2>/dev/null && ok=0
  elif command -v python3 >/dev/null; then python3 -c "import os,sys; os.setxattr(sys.argv[1], 'user.mito', b'1')" "$f" 2>/dev/null && ok=0
  fi
  rm -f "$f"
  return $ok
}
if ! xattrs_ok "$S3D"; then
  rmdir "$S3D" 2>/dev/null || true
  S3D=/tmp/mito-ci-s3-$S3PORT
  rm -rf "$S3D"
  mkdir -p "$S3D"
fi
echo "$S3D" >"$LAB/s3.dir"
rm -rf "$S3D/data"
mkdir -p "$S3D/data"
S3ACCESS=mitoci
S3SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The keys go by environment, not argv, so ps does not show the secret.
ROOT_ACCESS_KEY=$S3ACCESS ROOT_SECRET_KEY=$S3SECRET \
  setsid "$VGW" --port "127.0.0.1:$S3PORT" --region us-east-1 --quiet posix "$S3D/data" \
  </dev/null >"$LAB/s3.log" 2>&1 &
echo $! >"$LAB/s3.pid"
wait_up versitygw "$LAB/s3.pid" "$S3PORT" 'GET / HTTP/1.0\r\n\r\n' 'HTTP/1.' "$LAB/s3.log"
say "s3 (versitygw) on 127.0.0.1:$S3PORT, data in $S3D/data"

mkdir -p "$LAB/redis"
redis-server --bind 127.0.0.1 --port "$REDISPORT" --save '' --appendonly no --daemonize yes \
  --dir "$LAB/redis" --pidfile "$LAB/redis.pid" --logfile "$LAB/redis.log" >/dev/null
wait_up redis-server "$LAB/redis.pid" "$REDISPORT" 'PING\r\n' '+PONG' "$LAB/redis.log"
say "redis on 127.0.0.1:$REDISPORT"

chmod 600 "$LAB/env"   # before the secret goes in
cat >> "$LAB/env" <<ENV
export MITO_TEST_S3_ENDPOINT=127.0.0.1:$S3PORT
export MITO_TEST_S3_ACCESS_KEY=$S3ACCESS
export MITO_TEST_S3_SECRET_KEY=$S3SECRET
export MITO_TEST_REDIS_URL=redis://127.0.0.1:$REDISPORT/0
ENV

# --- sshd hosts: h2 h3 h4 on 127.0.0.2-4:2222, jump and inner in network
# namespaces; see ssh-hosts.sh. The run that owns them is the make test
# (.ci/test.sh) that called us, if one did: if it dies without stopping
# them, the next run may take them back. --------------------------------------
if [ -z "${MITO_CI_OWNER_PID:-}" ]; then
  MITO_CI_OWNER_PID=0
  case "$(ps -o args= -p "$PPID" 2>/dev/null)" in *.ci/test.sh*) MITO_CI_OWNER_PID=$PPID ;; esac
fi
LAB=$LAB MITO_CI_OWNER_PID=$MITO_CI_OWNER_PID bash "$ROOT/.ci/ssh-hosts.sh" up
[ -f "$LAB/ssh/env" ] && cat "$LAB/ssh/env" >> "$LAB/env"
say "all up; source $LAB/env"
