# scripts/pcscd.sh — sourced by scripts/test and scripts/rehearse.
#
# start_pcscd starts pcscd (with the vpcd driver Debian's vsmartcard-vpcd
# installs) when none is running, remembers its PID, and registers a trap
# that stops only that process at exit, on failure too.
#
# start_reader_pool N starts N more pcscds for tests, each in a mount
# namespace of its own (its /run/pcscd a directory of this run, where its
# socket is seen from outside) with two vpcd readers of its own on ports
# CUSTOS_READER_POOL_PORT (31973) + 10*(i-1) and the one after (below
# Linux's ephemeral ports, 32768 and up, which an outgoing connection of
# any test may hold), and exports
# CUSTOS_READER_POOL (SOCKET:PORT,...; internal/realtest binds each test
# process to one member no other process uses) without waiting for them:
# wait_reader_pool does. Stopped by PID at exit.

CUSTOS_PCSCD_PID=""

CUSTOS_READER_POOL_PIDS=""
CUSTOS_READER_POOL_DIR=""

stop_pcscd() {
  local pid
  for pid in $CUSTOS_READER_POOL_PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $CUSTOS_READER_POOL_PIDS; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -n "$CUSTOS_READER_POOL_PIDS" ]; then
    echo "pcscd: stopped the reader pool (pids$CUSTOS_READER_POOL_PIDS)" >&2
  fi
  if [ -n "$CUSTOS_READER_POOL_DIR" ]; then rm -rf "$CUSTOS_READER_POOL_DIR"; fi
  CUSTOS_READER_POOL_PIDS="" CUSTOS_READER_POOL_DIR=""
  if [ -n "$CUSTOS_PCSCD_PID" ] && kill -0 "$CUSTOS_PCSCD_PID" 2>/dev/null; then
    kill "$CUSTOS_PCSCD_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$CUSTOS_PCSCD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$CUSTOS_PCSCD_PID" 2>/dev/null || true
    echo "pcscd: stopped (pid $CUSTOS_PCSCD_PID)" >&2
  fi
  CUSTOS_PCSCD_PID=""
}

start_pcscd() {
  if pgrep -x pcscd >/dev/null 2>&1; then
    echo "pcscd: already running (pid $(pgrep -x pcscd | head -1)); using it" >&2
    return 0
  fi
  if [ ! -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ]; then
    echo "pcscd: error: the vpcd driver is not installed" >&2
    echo "pcscd: hint: run scripts/setup as root" >&2
    return 1
  fi
  mkdir -p /run/pcscd
  rm -f /run/pcscd/pcscd.comm /run/pcscd/pcscd.pid
  local log=${CUSTOS_PCSCD_LOG:-/tmp/custos-pcscd.log}
  pcscd --foreground >"$log" 2>&1 &
  CUSTOS_PCSCD_PID=$!
  trap stop_pcscd EXIT
  for _ in $(seq 100); do
    [ -S /run/pcscd/pcscd.comm ] && break
    if ! kill -0 "$CUSTOS_PCSCD_PID" 2>/dev/null; then
      echo "pcscd: error: pcscd exited at start; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  if [ ! -S /run/pcscd/pcscd.comm ]; then
    echo "pcscd: error: no socket after 10 s" >&2
    return 1
  fi
  # vpcd listens once pcscd has loaded it.
  local listening=""
  for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/35963) 2>/dev/null; then listening=1; break; fi
    sleep 0.1
  done
  if [ -z "$listening" ]; then
    echo "pcscd: error: the vpcd driver is not listening on 127.0.0.1:35963; pcscd's log:" >&2
    cat "$log" >&2
    return 1
  fi
  echo "pcscd: started (pid $CUSTOS_PCSCD_PID), vpcd readers on 127.0.0.1:35963 and :35964" >&2
}

start_reader_pool() {
  local n=$1 base=${CUSTOS_READER_POOL_PORT:-31973} i dir port pool="" pid
  CUSTOS_READER_POOL_DIR=$(mktemp -d /tmp/custos-readers.XXXXXX)
  trap stop_pcscd EXIT
  for i in $(seq "$n"); do
    dir="$CUSTOS_READER_POOL_DIR/$i"
    port=$((base + 10 * (i - 1)))
    mkdir -p "$dir"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "pcscd: error: port $port of the reader pool is taken (a pool of another run?)" >&2
      echo "pcscd: hint: set CUSTOS_READER_POOL_PORT to another base port" >&2
      return 1
    fi
    printf 'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:0x%X\nLIBPATH /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID 0x%X\n' \
      "$port" "$port" >"$dir/reader.conf"
    # unshare execs sh, which execs pcscd: $! is pcscd's PID.
    unshare --mount --propagation private -- sh -c \
      'mount --bind "$1" /run/pcscd && exec pcscd --foreground --config "$1/reader.conf"' sh "$dir" \
      >"$dir/pcscd.log" 2>&1 &
    CUSTOS_READER_POOL_PIDS+=" $!"
    pool+="${pool:+,}$dir/pcscd.comm:$port"
  done
  export CUSTOS_READER_POOL="$pool" CUSTOS_READER_POOL_BASE="$base" CUSTOS_READER_POOL_SIZE="$n"
}

# wait_reader_pool returns once every pcscd of the pool listens, on its
# socket and on its vpcd ports (start_reader_pool does not wait: the
# pcscds start while other steps run).
wait_reader_pool() {
  local n=$CUSTOS_READER_POOL_SIZE base=$CUSTOS_READER_POOL_BASE i dir port
  for i in $(seq "$n"); do
    dir="$CUSTOS_READER_POOL_DIR/$i"
    port=$((base + 10 * (i - 1)))
    for _ in $(seq 100); do
      [ -S "$dir/pcscd.comm" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    if ! [ -S "$dir/pcscd.comm" ] || ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "pcscd: error: pcscd $i of the reader pool did not start; its log:" >&2
      cat "$dir/pcscd.log" >&2
      return 1
    fi
  done
  echo "pcscd: a reader pool of $n (pids$CUSTOS_READER_POOL_PIDS), vpcd readers from 127.0.0.1:$base" >&2
}
