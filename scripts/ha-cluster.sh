#!/usr/bin/env bash
# A highly available Postgres for development and tests, on one machine: one
# etcd member (the consensus store) and three Postgres 15 nodes run by
# Patroni, one leader and two replicas, with synchronous replication.
#
#   scripts/ha-cluster.sh start          install what is missing, bring up every node that is down, wait, print the URL
#   scripts/ha-cluster.sh status         the cluster table (patronictl list)
#   scripts/ha-cluster.sh leader         the leader: "<name> 127.0.0.1:<port>"
#   scripts/ha-cluster.sh kill-leader    SIGKILL the leader's Patroni and its Postgres, the way a machine dies
#   scripts/ha-cluster.sh url            the store's DATABASE_URL for this cluster
#   scripts/ha-cluster.sh stop [--purge] stop everything (--purge: and delete every node's data)
#
# Run it as root on Debian (bookworm: patroni 3.0.2, etcd-server 3.4.23,
# postgresql-15); `start` apt-installs what is missing. Postgres runs as the
# postgres OS user. Everything lives under HA_DIR (default /var/tmp/widget-ha):
# etcd/ and node1..3/ (data/, patroni.yml, patroni.log, patroni.pid). The
# processes run in sessions of their own (setsid), so they outlive this script.
#
# Ports (HA_PORT_OFFSET, default 0, is added to each, so a second cluster can
# run beside the first; the failover test uses 100):
#   Postgres 5441-5443, Patroni REST API 8441-8443, etcd client 23790, peer 23800.
#
# `start` is idempotent: run it again and it starts whatever is down (a node
# killed by kill-leader comes back as a replica: Patroni rewinds it with
# pg_rewind, or clones it afresh if that fails), then waits until there is a
# leader and both replicas stream from it, one of them synchronous.
#
# The timings (bootstrap.dcs below; each one's reason is beside it) aim at a
# failover about 10 s after the leader's machine dies: the replicas cannot
# tell a dead leader from a slow one until the leader key expires (ttl).
set -euo pipefail

HA_DIR=${HA_DIR:-/var/tmp/widget-ha}
HA_PORT_OFFSET=${HA_PORT_OFFSET:-0}
PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
SCOPE=widget-ha
PY=/usr/bin/python3 # Debian's, the one Patroni runs on (not a pyenv shim on PATH)
ETCD_CLIENT=$((23790 + HA_PORT_OFFSET))
ETCD_PEER=$((23800 + HA_PORT_OFFSET))
NODES=(1 2 3)
WAIT=${HA_WAIT:-180} # seconds `start` waits for the cluster to be whole

pg_port() { echo $((5440 + $1 + HA_PORT_OFFSET)); }
api_port() { echo $((8440 + $1 + HA_PORT_OFFSET)); }

url() {
  local hosts=() i
  for i in "${NODES[@]}"; do hosts+=("127.0.0.1:$(pg_port "$i")"); done
  local IFS=,
  echo "postgres://postgres:postgres@${hosts[*]}/postgres?target_session_attrs=read-write&sslmode=disable"
}

die() { echo "ha-cluster: $*" >&2; exit 1; }

# alive PIDFILE WORD: the process in PIDFILE runs and its command line has WORD
# (a recycled PID is not ours).
alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# daemon PIDFILE LOG USER CMD...: run CMD as USER in a session of its own,
# detached from this script (stdin /dev/null, output to LOG); PIDFILE gets
# its PID (the sh execs CMD, so it is CMD's).
daemon() {
  local pidfile=$1 log=$2 user=$3
  shift 3
  rm -f "$pidfile"
  if [ "$user" = root ]; then
    setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$log" 2>&1 </dev/null &
  else
    setsid runuser -u "$user" -- sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$log" 2>&1 </dev/null &
  fi
  local _
  for _ in $(seq 1 100); do [ -s "$pidfile" ] && return 0; sleep 0.05; done
  die "$* did not start (see $log)"
}

install_missing() {
  local need=()
  command -v patroni >/dev/null || need+=(patroni)
  command -v etcd >/dev/null || need+=(etcd-server)
  [ -x "$PG_BIN/postgres" ] || need+=("postgresql-$PG_VERSION")
  command -v psql >/dev/null || need+=(postgresql-client)
  command -v curl >/dev/null || need+=(curl)
  ((${#need[@]})) || return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "missing ${need[*]}: install them (Debian: apt-get install ${need[*]}) or run as root"
  echo "== installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
}

start_etcd() {
  local d=$HA_DIR/etcd
  alive "$d/etcd.pid" etcd && return 0
  mkdir -p "$d"
  # One member: enough for one machine. In production, three or five on
  # machines of their own (deploy/HA.md). --initial-* only matter the first
  # time; afterwards the data directory says who the member is.
  daemon "$d/etcd.pid" "$d/etcd.log" root etcd --name "$SCOPE-etcd" --data-dir "$d/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "$SCOPE-etcd=http://127.0.0.1:$ETCD_PEER" --initial-cluster-state new
  local _
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$ETCD_CLIENT/health" 2>/dev/null | grep -q '"health":"true"' && return 0
    sleep 0.1
  done
  die "etcd did not become healthy (see $d/etcd.log)"
}

write_config() {
  local i=$1 d=$HA_DIR/node$1
  cat >"$d/patroni.yml" <<EOF
# Written by scripts/ha-cluster.sh. Patroni reads bootstrap.dcs only when it
# creates the cluster; afterwards the cluster-wide settings live in etcd
# (patronictl -c this-file edit-config).
scope: $SCOPE
namespace: /widget-store/
name: node$i

restapi:
  listen: 127.0.0.1:$(api_port "$i")
  connect_address: 127.0.0.1:$(api_port "$i")

etcd3:
  hosts: 127.0.0.1:$ETCD_CLIENT

bootstrap:
  dcs:
    # ttl: how long the leader key lives without being renewed. A replica
    # cannot tell a dead leader from a slow one until it expires, so this is
    # the failover time after a machine dies. 10 s (Patroni's default is 30)
    # is fast, and still rides out a leader stalled for a few seconds (a busy
    # 2-core machine, a slow fsync) without a needless failover.
    ttl: 10
    # loop_wait: the pause between two runs of Patroni's HA loop. The leader
    # renews its key every loop, and a replica notices an expired key within
    # one loop; 1 s keeps both prompt (one cheap etcd write a second).
    loop_wait: 1
    # retry_timeout: how long etcd and Postgres operations are retried before
    # the leader gives up: if it cannot renew its key within this, it demotes
    # itself rather than risk two leaders. 4 s rides out a brief etcd hiccup.
    # The constraint loop_wait + 2 * retry_timeout <= ttl (1 + 8 <= 10) makes
    # the leader demote itself before its key can expire and a replica take
    # over, never after.
    retry_timeout: 4
    # A commit is acknowledged only once a replica has flushed it, and only
    # that synchronous replica may be promoted: losing the leader loses no
    # acknowledged commit.
    synchronous_mode: true
    # Not strict: when no replica is left at all, the leader goes on alone
    # (asynchronous) instead of refusing every commit. With two replicas, one
    # can die and the other is synchronous at once; the leader is alone only
    # when both replicas are gone, and a third loss (the leader itself) would
    # then lose data: a double failure the store does not claim to survive
    # (deploy/HA.md). Strict mode would stop the store instead.
    synchronous_mode_strict: false
    synchronous_node_count: 1
    postgresql:
      # A crashed leader has WAL its successor never got; pg_rewind cuts it
      # back so it can follow the new leader (a full copy if that fails, below).
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        synchronous_commit: "on"
        max_connections: 200
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 256MB
        shared_buffers: 64MB
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8

postgresql:
  listen: 127.0.0.1:$(pg_port "$i")
  connect_address: 127.0.0.1:$(pg_port "$i")
  data_dir: $d/data
  bin_dir: $PG_BIN
  pgpass: $d/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    unix_socket_directories: $d
  pg_hba:
    - local all all peer
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
  # If pg_rewind cannot bring a returning node back, copy it afresh from the
  # leader instead of leaving it out of the cluster.
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
  basebackup:
    - checkpoint: fast
EOF
}

start_node() {
  local i=$1 d=$HA_DIR/node$1
  alive "$d/patroni.pid" patroni && return 0
  mkdir -p "$d"
  write_config "$i"
  chown postgres:postgres "$d"
  chmod 0700 "$d"
  chown postgres:postgres "$d"/patroni.yml
  [ -e "$d/patroni.log" ] && chown postgres:postgres "$d/patroni.log"
  daemon "$d/patroni.pid" "$d/patroni.log" postgres patroni "$d/patroni.yml"
  echo "started node$i (Patroni pid $(cat "$d/patroni.pid"), Postgres on 127.0.0.1:$(pg_port "$i"))"
}

# cluster_json: Patroni's view of the cluster (GET /cluster) from the first
# node that answers.
cluster_json() {
  local i
  for i in "${NODES[@]}"; do
    curl -fsS --max-time 2 "http://127.0.0.1:$(api_port "$i")/cluster" 2>/dev/null && return 0
  done
  return 1
}

# leader_of JSON: "<name> <port>" of the running leader, or nothing. The
# cluster view is etcd's, which still names a dead leader until its key
# expires, so the leader must also say so itself (its REST API's /primary
# answers 200 only on a running leader).
leader_of() {
  "$PY" -c '
import json, sys, urllib.request
for m in json.load(sys.stdin).get("members", []):
    if m.get("role") in ("leader", "master") and m.get("state") == "running":
        try:
            with urllib.request.urlopen(m["api_url"].rsplit("/", 1)[0] + "/primary", timeout=2) as r:
                if r.status == 200:
                    print(m["name"], m["port"])
        except Exception:
            pass
'
}

psql_at() { # PORT SQL
  PGPASSWORD=postgres PGCONNECT_TIMEOUT=3 psql -X -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atc "$2"
}

# whole: a leader runs, and both replicas stream from it, one synchronously.
whole() {
  local js leader port
  js=$(cluster_json) || return 1
  read -r leader port <<<"$(leader_of <<<"$js")" || return 1
  [ -n "${port:-}" ] || return 1
  # Every member runs, and Patroni's own record of the synchronous replica
  # (the one it may promote) agrees with what Postgres does.
  "$PY" -c '
import json, sys
ms = json.load(sys.stdin).get("members", [])
running = [m for m in ms if m.get("state") == "running"]
sys.exit(0 if len(running) == 3 and any(m.get("role") == "sync_standby" for m in running) else 1)
' <<<"$js" || return 1
  [ "$(psql_at "$port" "SELECT count(*) FILTER (WHERE state = 'streaming') || ' ' || count(*) FILTER (WHERE sync_state = 'sync') FROM pg_stat_replication" 2>/dev/null)" = "2 1" ]
}

cmd_start() {
  [ "$(id -u)" = 0 ] || die "run as root (Postgres runs as the postgres user; this script changes to it)"
  install_missing
  id postgres >/dev/null 2>&1 || die "no postgres OS user (install postgresql-$PG_VERSION)"
  mkdir -p "$HA_DIR"
  chmod 0755 "$HA_DIR"
  start_etcd
  local i
  for i in "${NODES[@]}"; do start_node "$i"; done
  echo "== waiting for a leader and two streaming replicas (at most ${WAIT}s)"
  local deadline=$((SECONDS + WAIT))
  until whole; do
    ((SECONDS < deadline)) || { cmd_status || true; die "the cluster is not whole after ${WAIT}s (logs: $HA_DIR/node*/patroni.log)"; }
    sleep 0.5
  done
  cmd_status
  echo "DATABASE_URL=$(url)"
}

cmd_status() {
  patronictl -c "$HA_DIR/node1/patroni.yml" list 2>/dev/null || die "no cluster answers (is it started? HA_DIR=$HA_DIR)"
}

cmd_leader() {
  local js out
  js=$(cluster_json) || die "no Patroni node answers"
  out=$(leader_of <<<"$js")
  [ -n "$out" ] || die "no leader right now"
  read -r name port <<<"$out"
  echo "$name 127.0.0.1:$port"
}

# pids_of_node I: the node's Patroni (and the runuser that started it, which
# would otherwise stay stopped when its child is), and every process of its
# Postgres.
pids_of_node() {
  local d=$HA_DIR/node$1 pm pp
  if alive "$d/patroni.pid" patroni; then
    cat "$d/patroni.pid"
    pp=$(ps -o ppid= -p "$(cat "$d/patroni.pid")" | tr -d ' ')
    [ -n "$pp" ] && [ -r "/proc/$pp/cmdline" ] && tr '\0' ' ' <"/proc/$pp/cmdline" | grep -q "^runuser .*$d/patroni.pid" && echo "$pp"
  fi
  if [ -s "$d/data/postmaster.pid" ]; then
    pm=$(head -1 "$d/data/postmaster.pid")
    if [ -r "/proc/$pm/cmdline" ] && tr '\0' ' ' <"/proc/$pm/cmdline" | grep -q -- "$d/data"; then
      echo "$pm"
      ps -o pid= --ppid "$pm" || true
    fi
  fi
}

cmd_kill_leader() {
  local name port
  read -r name port <<<"$(cmd_leader)"
  local i=${name#node} pids
  pids=$(pids_of_node "$i" | tr '\n' ' ')
  [ -n "${pids// /}" ] || die "found no process of $name"
  # Freeze them all first, so none of them reacts to another's death (no
  # shutdown checkpoint, no last WAL sent, no leader key released), then kill.
  # shellcheck disable=SC2086
  kill -STOP $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  local p
  for p in $pids; do
    while kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" != Z ]; do sleep 0.02; done
  done
  echo "killed $name ($port): pids $pids"
}

cmd_stop() {
  local purge=${1:-} i d
  for i in "${NODES[@]}"; do
    d=$HA_DIR/node$i
    alive "$d/patroni.pid" patroni && kill -TERM "$(cat "$d/patroni.pid")" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 30))
  for i in "${NODES[@]}"; do
    d=$HA_DIR/node$i
    while alive "$d/patroni.pid" patroni && ((SECONDS < deadline)); do sleep 0.2; done
    # Patroni stops its Postgres; what is left after 30 s (or a Postgres
    # whose Patroni was killed) is killed.
    local pids
    pids=$(pids_of_node "$i" | tr '\n' ' ')
    # shellcheck disable=SC2086
    [ -z "${pids// /}" ] || kill -KILL $pids 2>/dev/null || true
  done
  d=$HA_DIR/etcd
  if alive "$d/etcd.pid" etcd; then
    kill -TERM "$(cat "$d/etcd.pid")"
    while alive "$d/etcd.pid" etcd; do sleep 0.1; done
  fi
  if [ "$purge" = --purge ]; then
    rm -rf "$HA_DIR"
    echo "stopped; removed $HA_DIR"
  else
    echo "stopped (data kept in $HA_DIR; stop --purge removes it)"
  fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop "${2:-}" ;;
status) cmd_status ;;
leader) cmd_leader ;;
kill-leader) cmd_kill_leader ;;
url) url ;;
*)
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
