#!/usr/bin/env bash
# Start the services the tests need, on ports of their own, and write their
# addresses to $LAB/env: a PostgreSQL, and (as root) five OpenSSH sshd hosts,
# three on loopback and two in network namespaces (see ssh-hosts.sh). It installs what is missing on a fresh Debian
# machine (as root), never touches a service it did not start, and is safe
# to run twice. Stop them with services-down.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${LAB:-$ROOT/.ci/tmp}
PGPORT=${MITO_CI_PGPORT:-5433}
mkdir -p "$LAB"
t0=$(date +%s)
say() { echo "[services] $* ($(( $(date +%s) - t0 ))s)"; }

# --- packages -------------------------------------------------------------
# openssh-server only as root: without root there are no sshd hosts anyway.
need=""
pkgs=postgresql
[ "$(id -u)" = 0 ] && pkgs="$pkgs openssh-server"
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
export MITO_TEST_PG_URL='postgres://postgres@127.0.0.1:$PGPORT/mito?sslmode=disable'
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
