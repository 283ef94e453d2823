# Private PostgreSQL and etcd servers for the scenarios that use a server store
# (multi_controller); source it, don't run it. Starts test/servers/up.ts, exports
# HOSTLOCK_TEST_PG_URL and HOSTLOCK_TEST_ETCD_URL, and stops the servers when
# the sourcing shell exits (their helper ends when its stdin closes).
hl_servers_env="$(mktemp -d)/servers.env"
# Its output goes to a file: Node makes the descriptors it shares non-blocking,
# which Ansible refuses on its own stderr.
hl_servers_log="$(dirname "$hl_servers_env")/servers.log"
coproc HL_SERVERS { node "$HOSTLOCK_REPO/build/test/servers/up.js" "$hl_servers_env" >"$hl_servers_log" 2>&1; }
hl_stop_servers() {
    exec {HL_SERVERS[1]}>&- 2>/dev/null || true
    wait "$HL_SERVERS_PID" 2>/dev/null || true
    rm -rf "$(dirname "$hl_servers_env")"
}
trap hl_stop_servers EXIT
for _ in $(seq 600); do
    [ -f "$hl_servers_env" ] && break
    kill -0 "$HL_SERVERS_PID" 2>/dev/null || break
    sleep 0.2
done
if [ ! -f "$hl_servers_env" ]; then
    echo "molecule: the private PostgreSQL and etcd servers did not start:" >&2
    cat "$hl_servers_log" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1090
source "$hl_servers_env"
set +a
