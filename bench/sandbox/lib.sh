# Shared by the sandbox benches (source it): waiting for a server they started to say where it listens.

# The sed -n expression that prints the API port from agentd's JSON log line "listening".
AGENTD_PORT_SED='s/.*"msg":"listening".*"api":"[^"]*:\([0-9]*\)".*/\1/p'

# log_port LOG SED [TRIES]: prints the port SED (a sed -n expression) finds in LOG, trying every 50 ms, TRIES times
# (200: 10 s); prints nothing if it never appears.
log_port() {
  local log=$1 expr=$2 tries=${3:-200} p=
  for _ in $(seq 1 "$tries"); do
    p=$(sed -n "$expr" "$log" 2>/dev/null | head -1)
    [ -n "$p" ] && break
    sleep 0.05
  done
  printf '%s' "$p"
}
