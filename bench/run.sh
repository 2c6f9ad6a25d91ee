#!/usr/bin/env bash
# End-to-end benchmark: no-op tasks per second and submit-to-start latency
# through a coordinator and local shims, on SQLite and on PostgreSQL, for a
# few host×slot configurations; then the same through real sshd hosts, with
# the time from a coordinator's start until every SSH host is ready, cold
# (shim uploaded) and warm (shim cached); and a 256 MiB artifact sent
# direct and relayed to S3 against a plain minio-go PutObject. Prints markdown tables, headed by
# the machine, for docs/benchmarks.md. `make bench` runs it after `make build`.
#
# Services: MITO_TEST_PG_URL and MITO_TEST_SSH_* if set; otherwise
# .ci/services-up.sh starts a private PostgreSQL (on port MITO_BENCH_PGPORT,
# default 5434), S3 server (MITO_BENCH_S3PORT, 7072), Redis
# (MITO_BENCH_REDISPORT, 6392) and, as root, the sshd hosts, in a LAB
# directory of its own
# (MITO_BENCH_LAB, default /tmp/mito-bench-lab), so that it never touches
# the services of a `make test` running at the same time; it stops them at
# the end. The sshd hosts' addresses are global: if a `make test` holds
# them, services-up.sh waits for it (MITO_CI_SSH_WAIT seconds, default 900).
# Without PostgreSQL only SQLite runs; without sshd hosts, no SSH runs.
#
# Environment: TASKS (default 2000) and SAMPLES (default 200) scale the runs;
# STATS=1 writes each run's store calls per task to stderr.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TASKS=${TASKS:-2000}
SAMPLES=${SAMPLES:-200}
SHIM=$ROOT/bin/mito-shim
SSH_SHIM=$ROOT/bin/mito-shim-linux-$(go env GOARCH)
[ -x "$SHIM" ] || { echo "bench: $SHIM is missing; run make build (or make bench)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mito-bench-run.XXXXXX")
PGPORT=${MITO_BENCH_PGPORT:-5434}
S3PORT=${MITO_BENCH_S3PORT:-7072}
REDISPORT=${MITO_BENCH_REDISPORT:-6392}
LAB=${MITO_BENCH_LAB:-/tmp/mito-bench-lab}
started=""
cleanup() {
  if [ -n "$started" ]; then
    LAB=$LAB MITO_CI_PGPORT=$PGPORT MITO_CI_S3PORT=$S3PORT MITO_CI_REDISPORT=$REDISPORT bash .ci/services-down.sh
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# Built once, so that no run pays for compilation.
go build -o "$TMP/bench" ./bench

if { [ -z "${MITO_TEST_PG_URL:-}" ] || [ -z "${MITO_TEST_SSH_HOSTS:-}" ]; } && [ -f .ci/services-up.sh ]; then
  echo "[bench] starting the services (LAB=$LAB, PostgreSQL on port $PGPORT)" >&2
  pg_url=${MITO_TEST_PG_URL:-}
  started=1
  # This shell owns the sshd hosts: if it dies without stopping them, the
  # next run may take them back.
  LAB=$LAB MITO_CI_PGPORT=$PGPORT MITO_CI_S3PORT=$S3PORT MITO_CI_REDISPORT=$REDISPORT MITO_CI_OWNER_PID=$$ bash .ci/services-up.sh >&2 ||
    echo "[bench] services-up.sh failed; benchmarking what did start" >&2
  # shellcheck disable=SC1091
  [ -f "$LAB/env" ] && source "$LAB/env"
  [ -n "$pg_url" ] && MITO_TEST_PG_URL=$pg_url
fi
stores="sqlite"
if [ -n "${MITO_TEST_PG_URL:-}" ]; then
  stores="sqlite postgres"
else
  echo "[bench] no PostgreSQL; benchmarking SQLite only" >&2
fi
ssh_hosts=0
if [ -n "${MITO_TEST_SSH_HOSTS:-}" ] && [ -x "$SSH_SHIM" ]; then
  ssh_hosts=$(echo "$MITO_TEST_SSH_HOSTS" | tr ',' '\n' | grep -c .)
  [ -n "${MITO_TEST_SSH_JUMP:-}" ] && ssh_hosts=$(( ssh_hosts + 1 ))
  [ -n "${MITO_TEST_SSH_JUMP:-}" ] && [ -n "${MITO_TEST_SSH_INNER:-}" ] && ssh_hosts=$(( ssh_hosts + 1 ))
else
  echo "[bench] no sshd hosts (or no $SSH_SHIM); no SSH runs" >&2
fi

# --- the machine ------------------------------------------------------------
model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1)
mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo 2>/dev/null)
tmpfs=$(df -T "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR==2 {print $2}')
echo "- CPU: $(nproc) × ${model:-unknown}, $mem RAM"
echo "- OS: $(uname -sr)"
echo "- Go: $(go version | cut -d' ' -f3-)"
echo "- SQLite: WAL, synchronous=FULL, file on ${tmpfs:-?} (${TMPDIR:-/tmp})"
if [[ $stores == *postgres* ]]; then
  if command -v psql >/dev/null; then
    pgver=$(psql "$MITO_TEST_PG_URL" -tAc "SHOW server_version" 2>/dev/null || echo "?")
    pgset=$(psql "$MITO_TEST_PG_URL" -tAc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')" 2>/dev/null || echo "?")
    echo "- PostgreSQL: $pgver on loopback ($pgset)"
  else
    echo "- PostgreSQL: on loopback"
  fi
fi
if [ "$ssh_hosts" -gt 0 ]; then
  echo "- SSH hosts: $(ssh -V 2>&1 | cut -d, -f1) sshd on this machine (loopback, and veths into network namespaces), sharing its filesystem; Go client golang.org/x/crypto/ssh $(go list -m -f '{{.Version}}' golang.org/x/crypto 2>/dev/null)"
fi
echo "- load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shares its cores)"
echo "- command: make bench (TASKS=$TASKS SAMPLES=$SAMPLES)"
echo

# --- the runs ---------------------------------------------------------------
# hosts slots tasks
configs=("2 4 $TASKS" "1 1 $(( TASKS / 4 ))")
header=-header
for st in $stores; do
  for cfg in "${configs[@]}"; do
    read -r hosts slots tasks <<<"$cfg"
    echo "[bench] $st, $hosts×$slots, $tasks tasks" >&2
    "$TMP/bench" -store "$st" -hosts "$hosts" -slots "$slots" -tasks "$tasks" \
      -latency-samples "$SAMPLES" -shim "$SHIM" -timeout 4m ${STATS:+-stats} $header
    header=""
  done
done

# --- SSH hosts ----------------------------------------------------------------
# All the hosts with 2 slots each, and one loopback host with one slot. The
# store is SQLite: the SSH path is what these runs are about.
if [ "$ssh_hosts" -gt 0 ]; then
  echo
  echo "### SSH hosts: $MITO_TEST_SSH_HOSTS${MITO_TEST_SSH_JUMP:+, jump $MITO_TEST_SSH_JUMP}${MITO_TEST_SSH_INNER:+, inner $MITO_TEST_SSH_INNER (through jump)}"
  echo
  ssh_configs=("$ssh_hosts 2 $TASKS 3" "1 1 $(( TASKS / 4 )) 0")
  header=-header
  for cfg in "${ssh_configs[@]}"; do
    read -r hosts slots tasks probe <<<"$cfg"
    echo "[bench] ssh, sqlite, $hosts×$slots, $tasks tasks" >&2
    "$TMP/bench" -transport ssh -store sqlite -hosts "$hosts" -slots "$slots" -tasks "$tasks" \
      -latency-samples "$SAMPLES" -ssh-shim "$SSH_SHIM" -timeout 4m -starts 3 \
      -probe "$probe" -probe-out "$TMP/probe.md" -starts-out "$TMP/starts.md" ${STATS:+-stats} $header
    header=""
  done
  echo
  echo "Start to ready:"
  echo
  cat "$TMP/starts.md"
  if [ -s "$TMP/probe.md" ]; then
    echo
    echo "One host at a time:"
    echo
    cat "$TMP/probe.md"
  fi
fi
# --- artifacts -----------------------------------------------------------------
# A 256 MiB artifact, direct and relayed, against a plain minio-go PutObject
# of the same file to the same S3 server.
if [ -n "${MITO_TEST_S3_ENDPOINT:-}" ]; then
  echo
  echo "### Artifact throughput (S3: versitygw on loopback)"
  echo
  echo "[bench] artifacts, 256 MiB" >&2
  "$TMP/bench" -artifacts -shim "$SHIM" -timeout 10m -header
else
  echo "[bench] no S3 server; no artifact run" >&2
fi
echo
echo "- load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
