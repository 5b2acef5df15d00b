# scripts/pcscd.sh — sourced by scripts/test and scripts/rehearse.
#
# start_pcscd starts pcscd (with the vpcd driver Debian's vsmartcard-vpcd
# installs) when none is running, remembers its PID, and registers a trap
# that stops only that process at exit, on failure too.

CUSTOS_PCSCD_PID=""

stop_pcscd() {
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
