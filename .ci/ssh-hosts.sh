#!/usr/bin/env bash
# ssh-hosts.sh up|down: real OpenSSH sshd "hosts" for the SSH tests, called by
# services-up.sh and services-down.sh (run it through them).
#
#   h2 h3 h4  sshd on 127.0.0.2:2222, 127.0.0.3:2222, 127.0.0.4:2222 (loopback);
#             h4 with AllowTcpForwarding no, and in a cgroup v2 delegated to
#             the SSH user (as systemd's Delegate=yes makes one) where there
#             is a cgroup v2: its shims hold tasks in cgroups, the others
#             as subreapers
#   jump      sshd on 10.250.0.2:22 in network namespace mitojump, joined to
#             this namespace by a veth (10.250.0.1/30 here)
#   inner     sshd on 10.250.1.2:22 in network namespace mitoinner, joined ONLY
#             to mitojump (10.250.1.1/30 there): reachable only through jump,
#             by sshd's own direct-tcpip; nothing forwards IP packets
#
# Each host has its own ed25519 host key (new at each start), config, pidfile
# and log under $LAB/ssh/<host>/; login is by key only, as user tester, from
# the local machine only (AllowUsers tester@<local address>), never as root.
# $LAB/ssh holds the client key, a known_hosts pinning every host key, an
# ssh_config with the aliases above, and env, the MITO_TEST_SSH_* variables.
#
# The addresses and namespace names are global to the machine, so only one
# run holds them at a time: "up" takes them under a lock, records itself in
# /run/mito-ci-ssh/owner, and waits (MITO_CI_SSH_WAIT seconds, default 900)
# while another live run holds them (a make test whose process lives, or a
# services-up by hand whose sshd do); a dead run's hosts it takes over. "down" stops the sshd of this $LAB by
# its pidfiles and, if this $LAB is the owner, deletes the namespaces and
# veths; it is safe to run twice. Needs root; without it "up" says so and
# starts nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=$(realpath -m "${LAB:-$ROOT/.ci/tmp}")
S=$LAB/ssh
export LAB                           # for the netns-up and down this script runs as new processes
SSH_USER=tester
PORT=2222
LOOPBACK="2 3 4"                     # 127.0.0.N
NS_J=mitojump NS_I=mitoinner         # network namespaces, also their hostnames
VETH_ROOT=mito-jump0                 # root side of the veth to mitojump (its peer there is eth0)
VETH_INNER=mito-inner0               # mitojump side of the veth to mitoinner (its peer there is eth0)
JUMP_ADDR=10.250.0.2 JUMP_PEER=10.250.0.1
INNER_ADDR=10.250.1.2 INNER_PEER=10.250.1.1
STATE=/run/mito-ci-ssh               # lock and owner record: /run is empty after a reboot, as are netns
WAIT=${MITO_CI_SSH_WAIT:-900}
ms0=$(date +%s%3N)
say() { echo "[services] ssh: $* ($(( $(date +%s%3N) - ms0 )) ms)"; }
die() { echo "[services] ssh: $*" >&2; exit 1; }

case "$LAB" in *[[:space:]]*) die "LAB must not contain white space: '$LAB'";; esac

# --- helpers ----------------------------------------------------------------

# listening ADDR:PORT [NS]: whether something listens on ADDR:PORT (in NS).
listening() {
  if [ -n "${2:-}" ]; then
    ip netns exec "$2" ss -Hltn src "$1" 2>/dev/null | grep -q .
  else
    ss -Hltn src "$1" 2>/dev/null | grep -q .
  fi
}

# ns_exists NAME
ns_exists() { [ -e "/run/netns/$1" ]; }

# stop_sshd DIR: stop the sshd whose pidfile is DIR/sshd.pid, if it is still
# the sshd started with DIR/sshd_config (a pidfile may outlive its process and
# the pid be reused), then wait for its port to close: a killed daemon stays
# <defunct> until PID 1 reaps it, so its pid is no sign of anything.
stop_sshd() {
  local d=$1 pid listen ns=""
  [ -f "$d/sshd.pid" ] || return 0
  pid=$(cat "$d/sshd.pid" 2>/dev/null || true)
  listen=$(cat "$d/listen" 2>/dev/null || true)   # "ADDR:PORT [NS]"
  if [ -n "$pid" ] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-f $d/sshd_config"; then
    kill "$pid" 2>/dev/null || true
    # shellcheck disable=SC2086
    set -- $listen
    if [ $# -ge 1 ]; then
      ns=${2:-}
      for _ in $(seq 100); do
        { [ -n "$ns" ] && ! ns_exists "$ns"; } && break
        listening "$1" "$ns" || break
        sleep 0.05
      done
      if [ -z "$ns" ] || ns_exists "$ns"; then
        listening "$1" "$ns" && echo "[services] ssh: $1 still listening 5 s after killing sshd $pid" >&2
      fi
    fi
  fi
  rm -f "$d/sshd.pid"
}

# delete_netns: the two namespaces and their veths. Processes left in them
# are sessions of the jump and inner sshd (a test's shim): they end too.
delete_netns() {
  local ns pids
  for ns in $NS_I $NS_J; do
    ns_exists "$ns" || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
  done
  ip link del "$VETH_ROOT" 2>/dev/null || true          # takes its peer along
  ns_exists "$NS_J" && { ip -n "$NS_J" link del "$VETH_INNER" 2>/dev/null || true; }
  for ns in $NS_I $NS_J; do
    ns_exists "$ns" && { ip netns del "$ns" 2>/dev/null || echo "[services] ssh: could not delete netns $ns" >&2; }
  done
  return 0
}

# owner: "LAB PID" of the run that holds the addresses, or nothing.
owner() { cat "$STATE/owner" 2>/dev/null || true; }

# owner_live LAB PID: whether the run that owns the addresses is still
# there. A make test records its pid; a services-up by hand records 0, and
# is there while any of its sshd is (its pidfiles, checked as stop_sshd
# does, since a pid may be reused).
owner_live() {
  local lab=$1 pid=$2 f p
  if [ "$pid" != 0 ]; then kill -0 "$pid" 2>/dev/null; return; fi
  for f in "$lab"/ssh/*/sshd.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f" 2>/dev/null || true)
    if [ -n "$p" ] && tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "-f $(dirname "$f")/sshd_config"; then
      return 0
    fi
  done
  return 1
}

# lock: hold $STATE/lock on fd 9 (released when this process exits).
lock() {
  mkdir -p -m 0755 "$STATE"
  exec 9>>"$STATE/lock"
  flock -w 60 9 || die "could not lock $STATE/lock in 60 s"
}
unlock() { flock -u 9; exec 9>&-; }

# cgroup2_mount: where the cgroup v2 hierarchy is mounted, or nothing.
cgroup2_mount() { awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts 2>/dev/null; }

# delegated_cgroup DIR: make a cgroup v2 for the sshd whose files are in
# DIR, owned by the SSH user as systemd's Delegate=yes does it (the
# directory, cgroup.procs, cgroup.threads, cgroup.subtree_control), and
# print it; nothing when there is no cgroup v2. Its path is kept in
# DIR/cgroup for "down".
delegated_cgroup() {
  local mnt cg
  mnt=$(cgroup2_mount)
  [ -n "$mnt" ] || return 0
  cg=$mnt/mito-ci-$(basename "$1")-$(echo "$LAB" | md5sum | cut -c1-8)
  remove_cgroup "$cg"
  mkdir "$cg" || return 0
  chown "$SSH_USER" "$cg" "$cg/cgroup.procs" "$cg/cgroup.threads" "$cg/cgroup.subtree_control"
  echo "$cg" >"$1/cgroup"
  echo "$cg"
}

# remove_cgroup CG: kill what is left in CG and below, and remove them all,
# deepest first.
remove_cgroup() {
  local cg=$1 d
  [ -d "$cg" ] || return 0
  for d in $(find "$cg" -depth -type d 2>/dev/null); do
    if [ -f "$d/cgroup.kill" ]; then echo 1 2>/dev/null >"$d/cgroup.kill" || true; fi
    for _ in $(seq 50); do rmdir "$d" 2>/dev/null && break; sleep 0.05; done
  done
}

# --- down --------------------------------------------------------------------
down() {
  [ "$(id -u)" = 0 ] || return 0
  local d
  for d in "$S"/*/; do
    [ -d "$d" ] && stop_sshd "${d%/}"
    if [ -f "$d/cgroup" ]; then remove_cgroup "$(cat "$d/cgroup")"; rm -f "$d/cgroup"; fi
  done
  lock
  # shellcheck disable=SC2046
  set -- $(owner)
  if [ "${1:-}" = "$LAB" ]; then
    delete_netns
    rm -f "$STATE/owner"
  fi
  unlock
}

# --- up ----------------------------------------------------------------------

# busy: why the global addresses cannot be taken now (empty if they can).
busy() {
  local i a
  for i in $LOOPBACK; do
    for a in 127.0.0.$i:$PORT 0.0.0.0:$PORT "[::]:$PORT" "*:$PORT"; do
      if ss -Hltn 2>/dev/null | awk '{print $4}' | grep -qxF "$a"; then echo "$a is in use"; return; fi
    done
  done
  for a in $NS_J $NS_I; do ns_exists "$a" && { echo "netns $a exists"; return; }; done
  ip link show "$VETH_ROOT" >/dev/null 2>&1 && { echo "link $VETH_ROOT exists"; return; }
  return 0
}

# acquire: become the owner of the addresses, waiting while another live run
# holds them. Returns holding the lock, which setup keeps until this process
# exits, so no other run sees a half-built set.
acquire() {
  local deadline=$(( SECONDS + WAIT )) next=0 why olab opid
  while :; do
    lock
    why=""
    # shellcheck disable=SC2046
    set -- $(owner)
    olab=${1:-} opid=${2:-0}
    if [ -n "$olab" ] && [ "$olab" != "$LAB" ]; then
      if ! owner_live "$olab" "$opid"; then
        # The run that started them is gone (a make test killed before its
        # trap could run services-down, or a services-up by hand whose
        # sshd died with its session): its hosts are leftovers.
        echo "[services] ssh: reclaiming the hosts of a finished run (LAB=$olab, pid $opid)"
        unlock
        LAB=$olab bash "$0" down
        continue
      fi
      why="held by the run with LAB=$olab"
      if [ "$opid" != 0 ]; then why="$why (pid $opid)"; fi
    elif [ "$olab" = "$LAB" ]; then
      delete_netns; rm -f "$STATE/owner"      # our own leftovers
    fi
    [ -n "$why" ] || why=$(busy)
    if [ -z "$why" ]; then
      echo "$LAB ${MITO_CI_OWNER_PID:-0}" >"$STATE/owner"
      return 0
    fi
    unlock
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "gave up after ${WAIT}s: $why. If that run is over, stop its hosts with: LAB=$olab bash .ci/services-down.sh (or ip netns del $NS_J; ip netns del $NS_I)"
    fi
    if [ "$SECONDS" -ge "$next" ]; then
      echo "[services] ssh: waiting for the sshd addresses: $why (up to $(( deadline - SECONDS ))s more)"
      next=$(( SECONDS + 30 ))
    fi
    sleep 2
  done
}

# sshd_config DIR LISTEN FROM [EXTRA...]: write DIR/sshd_config for an sshd
# on LISTEN that lets tester in from address FROM (a CIDR) only.
sshd_config() {
  local d=$1 listen=$2 from=$3
  shift 3
  {
    cat <<CFG
# written by .ci/ssh-hosts.sh
ListenAddress $listen
AddressFamily inet
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitEmptyPasswords no
UsePAM no
PermitRootLogin no
AllowUsers $SSH_USER@$from
StrictModes yes
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
GatewayPorts no
PermitUserEnvironment no
MaxStartups 100:30:200
MaxSessions 64
UseDNS no
LogLevel VERBOSE
Subsystem sftp internal-sftp
CFG
    printf '%s\n' "$@"
  } >"$d/sshd_config"
}

# hostkey DIR NAME: a new host key, mode 600 (sshd refuses others).
hostkey() {
  rm -f "$1/ssh_host_ed25519_key" "$1/ssh_host_ed25519_key.pub"
  ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1/ssh_host_ed25519_key"
  chmod 600 "$1/ssh_host_ed25519_key"
}

# netns_up: the jump and inner hosts. Run as its own process (set -e holds
# there); a failure leaves cleanup to the caller.
netns_up() {
  ip netns add "$NS_J"
  ip netns add "$NS_I"
  for ns in $NS_J $NS_I; do
    ip -n "$ns" link set lo up
    # Nothing is forwarded between the veths: inner is reached by sshd's
    # direct-tcpip from inside mitojump, never by routing.
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=0
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
  done
  ip link add "$VETH_ROOT" type veth peer name eth0 netns "$NS_J"
  ip addr add "$JUMP_PEER/30" dev "$VETH_ROOT"
  ip link set "$VETH_ROOT" up
  ip -n "$NS_J" addr add "$JUMP_ADDR/30" dev eth0
  ip -n "$NS_J" link set eth0 up
  ip -n "$NS_J" link add "$VETH_INNER" type veth peer name eth0 netns "$NS_I"
  ip -n "$NS_J" addr add "$INNER_PEER/30" dev "$VETH_INNER"
  ip -n "$NS_J" link set "$VETH_INNER" up
  ip -n "$NS_I" addr add "$INNER_ADDR/30" dev eth0
  ip -n "$NS_I" link set eth0 up
  # The routes must be ours: never talk to a real network by mistake.
  ip route get "$JUMP_ADDR" | grep -q "dev $VETH_ROOT " || die "route to $JUMP_ADDR does not go via $VETH_ROOT: $(ip route get "$JUMP_ADDR")"
  ip -n "$NS_J" route get "$INNER_ADDR" | grep -q "dev $VETH_INNER " || die "route to $INNER_ADDR in $NS_J does not go via $VETH_INNER"
  if ip route get "$INNER_ADDR" 2>/dev/null | grep -q "dev mito-"; then die "this namespace has a route to $INNER_ADDR via a mito link"; fi

  local ns addr peer d
  for ns in $NS_J $NS_I; do
    if [ "$ns" = "$NS_J" ]; then addr=$JUMP_ADDR peer=$JUMP_PEER d=$S/jump
    else addr=$INNER_ADDR peer=$INNER_PEER d=$S/inner; fi
    mkdir -p "$d"
    hostkey "$d" "$ns"
    if [ "$ns" = "$NS_J" ]; then
      # A jump host: it forwards to inner's sshd and nowhere else.
      sshd_config "$d" "$addr:22" "$peer" "PermitOpen $INNER_ADDR:22" "PermitListen none" "AllowStreamLocalForwarding no"
    else
      sshd_config "$d" "$addr:22" "$peer"
    fi
    echo "$addr:22 $ns" >"$d/listen"
    /usr/sbin/sshd -t -f "$d/sshd_config"
    # Own network and own hostname (UTS namespace); sshd daemonizes and
    # keeps both. It must not inherit the lock on fd 9.
    ip netns exec "$ns" unshare --uts sh -c "hostname $ns && exec /usr/sbin/sshd -f $d/sshd_config -E $d/sshd.log" 9>&-
  done
}

up() {
  if [ "$(id -u)" != 0 ]; then
    echo "[services] ssh: not root, so no sshd hosts: the SSH tests skip (or fail under MITO_TEST_REQUIRE)" >&2
    rm -f "$S/env"
    return 0
  fi
  [ -x /usr/sbin/sshd ] || die "/usr/sbin/sshd not found: install openssh-server"
  down                                 # this LAB's leftovers
  mkdir -p "$S"
  rm -f "$S/env"
  acquire
  say "addresses taken"

  mkdir -p -m 0755 /run/sshd           # privilege separation directory; /run starts empty
  if ! id "$SSH_USER" >/dev/null 2>&1; then
    useradd -m -s /bin/bash "$SSH_USER"
  fi
  usermod -p '*' "$SSH_USER"           # useradd's '!' is a locked account, which sshd refuses without PAM
  local home
  home=$(getent passwd "$SSH_USER" | cut -d: -f6)
  [ -f "$S/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "mito-ci" -f "$S/id_ed25519"
  install -d -m 700 -o "$SSH_USER" -g "$SSH_USER" "$home/.ssh"
  # authorized_keys is shared by every LAB: replace this LAB's line only.
  local ak=$home/.ssh/authorized_keys tmp
  tmp=$(mktemp)
  { [ -f "$ak" ] && awk -v c="mito-ci:$LAB" '$3 != c' "$ak"; echo "$(cut -d' ' -f1,2 "$S/id_ed25519.pub") mito-ci:$LAB"; } >"$tmp"
  install -m 600 -o "$SSH_USER" -g "$SSH_USER" "$tmp" "$ak"
  rm -f "$tmp"

  local i d cg hosts="" delegated="" known=$S/known_hosts.new
  : >"$known"
  for i in $LOOPBACK; do
    d=$S/h$i
    mkdir -p "$d"
    hostkey "$d" "h$i"
    if [ "$i" = 4 ]; then
      sshd_config "$d" "127.0.0.$i:$PORT" 127.0.0.0/8 "AllowTcpForwarding no" "AllowStreamLocalForwarding no"
    else
      sshd_config "$d" "127.0.0.$i:$PORT" 127.0.0.0/8
    fi
    echo "127.0.0.$i:$PORT" >"$d/listen"
    /usr/sbin/sshd -t -f "$d/sshd_config"
    cg=""
    [ "$i" = 4 ] && cg=$(delegated_cgroup "$d")
    if [ -n "$cg" ]; then
      # sshd and every session it starts live in the delegated cgroup.
      sh -c 'echo $$ >"$1/cgroup.procs" && exec /usr/sbin/sshd -f "$2/sshd_config" -E "$2/sshd.log"' sh "$cg" "$d" 9>&-
      delegated=127.0.0.$i:$PORT
    else
      /usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log" 9>&-    # absolute path: sshd re-execs itself
    fi
    echo "[127.0.0.$i]:$PORT $(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")" >>"$known"
    hosts="$hosts${hosts:+,}127.0.0.$i:$PORT"
  done
  say "sshd on $hosts"

  local netns=0
  if bash "$0" netns-up 9>&-; then
    netns=1
    echo "$JUMP_ADDR $(cut -d' ' -f1,2 "$S/jump/ssh_host_ed25519_key.pub")" >>"$known"
    echo "$INNER_ADDR $(cut -d' ' -f1,2 "$S/inner/ssh_host_ed25519_key.pub")" >>"$known"
    say "sshd on $JUMP_ADDR:22 (netns $NS_J) and $INNER_ADDR:22 (netns $NS_I, only through $NS_J)"
  else
    echo "[services] ssh: could not build the network namespaces (is CAP_NET_ADMIN missing?): no jump hosts; the tests that need them skip (or fail under MITO_TEST_REQUIRE)" >&2
    for d in "$S/jump" "$S/inner"; do stop_sshd "$d"; done
    delete_netns
  fi
  mv "$known" "$S/known_hosts"

  cat >"$S/ssh_config" <<CFG
# written by .ci/ssh-hosts.sh: use with ssh -F $S/ssh_config HOST
Host *
  User $SSH_USER
  IdentityFile $S/id_ed25519
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile $S/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ForwardAgent no
  ConnectTimeout 5
Host h2
  HostName 127.0.0.2
  Port $PORT
Host h3
  HostName 127.0.0.3
  Port $PORT
Host h4
  HostName 127.0.0.4
  Port $PORT
CFG
  if [ "$netns" = 1 ]; then
    cat >>"$S/ssh_config" <<CFG
Host jump
  HostName $JUMP_ADDR
  Port 22
Host inner
  HostName $INNER_ADDR
  Port 22
  ProxyJump jump
CFG
  fi

  # Check every host as a client would, all at once.
  local c=$S/ssh_config pids=() names=() h rc=0
  for h in h2 h3 h4; do
    ssh -F "$c" "$h" true >"$S/check-$h.log" 2>&1 & pids+=($!) names+=("$h")
  done
  # h4 must refuse to forward.
  ( ! ssh -F "$c" -J h4 h2 true ) >"$S/check-h4-nofwd.log" 2>&1 & pids+=($!) names+=("h4 refuses forwarding")
  if [ "$netns" = 1 ]; then
    for h in jump inner; do
      ( [ "$(ssh -F "$c" "$h" hostname)" = "mito$h" ] ) >"$S/check-$h.log" 2>&1 & pids+=($!) names+=("$h")
    done
    # inner is not reachable from here but through jump. A TCP connect is
    # no test of that: where outgoing connections go to a proxy (as on the
    # project's sandboxes) every address "connects". An SSH banner is.
    (
      banner=$(timeout 2 bash -c "exec 3<>/dev/tcp/$INNER_ADDR/22 && head -c 4 <&3" 2>/dev/null || true)
      echo "direct connect to $INNER_ADDR:22 read: '$banner'"
      [ "$banner" != "SSH-" ]
    ) >"$S/check-inner-direct.log" 2>&1 & pids+=($!) names+=("inner not reachable directly")
  fi
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "[services] ssh: check failed: ${names[$i]}" >&2
      rc=1
    fi
  done
  if [ "$rc" != 0 ]; then
    for f in "$S"/check-*.log "$S"/*/sshd.log; do [ -s "$f" ] && { echo "--- $f"; tail -n 8 "$f"; }; done >&2
    die "the sshd hosts do not work; see above"
  fi
  rm -f "$S"/check-*.log
  say "checked: ssh -F $c h2|h3|h4$([ "$netns" = 1 ] && echo '|jump|inner') true"

  {
    echo "export MITO_TEST_SSH_HOSTS=$hosts"
    echo "export MITO_TEST_SSH_USER=$SSH_USER"
    echo "export MITO_TEST_SSH_KEY=$S/id_ed25519"
    echo "export MITO_TEST_SSH_KNOWN_HOSTS=$S/known_hosts"
    echo "export MITO_TEST_SSH_CONFIG=$S/ssh_config"
    echo "export MITO_TEST_SSH_NOFWD=127.0.0.4:$PORT"
    [ -n "$delegated" ] && echo "export MITO_TEST_SSH_CGROUP=$delegated"
    if [ "$netns" = 1 ]; then
      echo "export MITO_TEST_SSH_JUMP=$JUMP_ADDR:22"
      echo "export MITO_TEST_SSH_INNER=$INNER_ADDR:22"
    fi
  } >"$S/env"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  netns-up) netns_up ;;
  *) die "usage: $0 up|down" ;;
esac
