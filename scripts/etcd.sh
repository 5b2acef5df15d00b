# scripts/etcd.sh — sourced by scripts/test.
#
# start_etcd starts a 3-member etcd cluster (Debian's etcd-server) on
# 127.0.0.1 with its own ports and data directories under a temporary
# directory, waits until it has a leader, exports CUSTOS_ETCD (the client
# endpoints, comma-separated) and CUSTOS_ETCD_PIDS for the tests, and
# registers a trap that stops exactly those processes, by PID, at exit
# (on failure too). CUSTOS_ETCD_PORT moves the ports (default 23791: the
# clients on 23791-23793, the peers on 23801-23803). Called again with
# another CUSTOS_ETCD_PORT, it starts a second cluster and exports that
# one's variables; the trap stops both. CUSTOS_ETCD_MEMBERS sets the number
# of members (default 3).
#
# The members keep their data in /dev/shm when it is there
# (CUSTOS_ETCD_TMP moves it): a member killed with -9 keeps all it
# acknowledged, as on disk, since the kernel holds the pages; only a crash of
# the whole machine would lose them, and no test does that. Three members'
# fsyncs on one small disk made an append cost ~26 ms and the etcd tests
# minutes of scripts/test. Measure etcd's own speed with CUSTOS_ETCD_TMP=/tmp.

CUSTOS_ETCD_DIR=""
CUSTOS_ETCD_DIRS=""
CUSTOS_ETCD_STARTED=""
CUSTOS_ETCD_TRAPPED=""

# stop_etcd stops every cluster start_etcd started (a member a test
# restarted included: its PID file is read again).
stop_etcd() {
  local pid f d
  for d in $CUSTOS_ETCD_DIRS; do
    for f in "$d"/m*.pid; do
      [ -f "$f" ] && CUSTOS_ETCD_STARTED+=" $(cat "$f")"
    done
  done
  for pid in $CUSTOS_ETCD_STARTED; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $CUSTOS_ETCD_STARTED; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  [ -n "$CUSTOS_ETCD_STARTED" ] && echo "etcd: stopped (pids $CUSTOS_ETCD_STARTED)" >&2
  CUSTOS_ETCD_STARTED=""
  for d in $CUSTOS_ETCD_DIRS; do rm -rf "$d"; done
  CUSTOS_ETCD_DIR="" CUSTOS_ETCD_DIRS=""
}

start_etcd() {
  if ! command -v etcd >/dev/null 2>&1; then
    echo "etcd: error: etcd is not installed" >&2
    echo "etcd: hint: run scripts/setup as root (Debian's etcd-server)" >&2
    return 1
  fi
  local base=${CUSTOS_ETCD_PORT:-23791} members=${CUSTOS_ETCD_MEMBERS:-3} i cluster="" endpoints="" these=""
  local tmp=${CUSTOS_ETCD_TMP:-}
  if [ -z "$tmp" ]; then
    tmp=/tmp
    [ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
  fi
  CUSTOS_ETCD_DIR=$(mktemp -d "$tmp/custos-etcd.XXXXXX")
  CUSTOS_ETCD_DIRS+=" $CUSTOS_ETCD_DIR"
  for i in $(seq 0 $((members - 1))); do
    cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 + i))"
    endpoints+="${endpoints:+,}127.0.0.1:$((base + i))"
  done
  # Chained onto any EXIT trap already set (start_pcscd's).
  if [ -z "$CUSTOS_ETCD_TRAPPED" ]; then
    local prev
    prev=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
    trap "stop_etcd; ${prev:-:}" EXIT
    CUSTOS_ETCD_TRAPPED=1
  fi
  for i in $(seq 0 $((members - 1))); do
    cat >"$CUSTOS_ETCD_DIR/m$i.sh" <<EOS
#!/bin/sh
# member m$i of the custos test cluster; restarts it with its data
echo \$\$ >"$CUSTOS_ETCD_DIR/m$i.pid"
exec etcd --name m$i --data-dir "$CUSTOS_ETCD_DIR/m$i" \\
  --listen-client-urls http://127.0.0.1:$((base + i)) \\
  --advertise-client-urls http://127.0.0.1:$((base + i)) \\
  --listen-peer-urls http://127.0.0.1:$((base + 10 + i)) \\
  --initial-advertise-peer-urls http://127.0.0.1:$((base + 10 + i)) \\
  --initial-cluster $cluster --initial-cluster-state new \\
  --initial-cluster-token custos-test-$$ \\
  --quota-backend-bytes $((8 << 30)) >>"$CUSTOS_ETCD_DIR/m$i.log" 2>&1
EOS
    sh "$CUSTOS_ETCD_DIR/m$i.sh" &
    CUSTOS_ETCD_STARTED+="${CUSTOS_ETCD_STARTED:+ }$!"
    these+="${these:+ }$!"
  done
  local ok=""
  for _ in $(seq 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    echo "etcd: error: the cluster did not become healthy in 10 s; member logs:" >&2
    tail -n 20 "$CUSTOS_ETCD_DIR"/m*.log >&2
    return 1
  fi
  export CUSTOS_ETCD="$endpoints"
  export CUSTOS_ETCD_DIR
  echo "etcd: started $members member(s) (pids $these) on $endpoints" >&2
}
