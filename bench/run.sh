#!/usr/bin/env bash
# Whole-process load benchmark: wardgate against nginx (plain proxy) and HAProxy (jwt_verify),
# all on 127.0.0.1, proxies and backend pinned to core 0, wrk -t1 pinned to core 1.
#
#   bash bench/run.sh            # build, install what is missing, run every target, print a table
#   DURATION=5 bash bench/run.sh # shorter runs
#   TARGETS="nginx wardgate" bash bench/run.sh     # only some targets (ratios need nginx)
#   PERF_DIR=/some/dir bash bench/run.sh           # also `perf record` each wardgate run there
#   STRACE_DIR=/some/dir bash bench/run.sh         # or count its system calls (slows it down)
#   SOAK=0 bash bench/run.sh                       # skip the 60 s RSS-over-time run
#
# Installs (by package name, when missing): wrk nginx haproxy. Stops what it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
WORK=$(mktemp -d /tmp/wardgate-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

need=()
for cmd in wrk nginx haproxy; do
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$cmd")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --locked --quiet --bin wardgate --example bare_forwarder
WARDGATE="$TARGET_DIR/release/wardgate"
BARE="$TARGET_DIR/release/examples/bare_forwarder"

python3 bench/mint.py "$WORK" >/dev/null
TOKEN=$(cat "$WORK/token")

BACKEND=18081; NGINX_PROXY=18082; HAPROXY_PORT=18083
WG=18084; WG_ADMIN=18085; WG_NOCACHE=18086; WG_NOCACHE_ADMIN=18087
BARE_LEGACY=18088; BARE_POOL=18089

# The backend: nginx answering ~200 bytes of JSON; the plain proxy: a second nginx with
# keep-alive to it. Two processes, as wardgate and HAProxy are processes of their own: one nginx
# serving both ports would hand each request from proxy to backend inside one event loop, with
# none of the context switches every other proxy here pays on the shared core.
mkdir -p "$WORK/nginx" "$WORK/nginx-proxy"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
master_process off;   # one process: its CPU time is the proxy's
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND;
        location / {
            default_type application/json;
            return 200 '{"id":"42","name":"Ada Lovelace","born":"1815-12-10","ward":"cardiology","care_team":["dr-ada"],"restricted":false,"notes":3,"updated":"2026-12-04T10:00:00Z","source":"records-api"}';
        }
    }
}
EOF
cat >"$WORK/nginx-proxy/nginx.conf" <<EOF
worker_processes 1;
master_process off;   # one process: its CPU time is the proxy's
daemon off;
pid $WORK/nginx-proxy/nginx.pid;
error_log $WORK/nginx-proxy/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PROXY;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
taskset -c 0 "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
taskset -c 0 "$NGINX" -c "$WORK/nginx-proxy/nginx.conf" -p "$WORK/nginx-proxy" &
NGINX_PROXY_PID=$!; PIDS+=($NGINX_PROXY_PID)

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny unless { var(txn.alg) -m str RS256 }
    http-request deny unless { var(txn.bearer),jwt_verify(txn.alg,"$WORK/pub.pem") -m int 1 }
    http-request set-var(txn.role) var(txn.bearer),jwt_payload_query('\$.roles[0]')
    http-request deny unless { var(txn.role) -m str doctor }
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND
EOF
taskset -c 0 "$HAPROXY" -f "$WORK/haproxy.cfg" -db &
HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)

# wardgate: the shipped policies plus patient 42 in dr-ada's care team; a file audit sink.
mkdir -p "$WORK/policies"
cp policies/clinic.cedarschema policies/*.cedar "$WORK/policies/"
python3 - "$WORK/policies/entities.json" <<'EOF'
import json, sys
es = json.load(open("policies/entities.json"))
es.append({"uid": {"type": "Clinic::Patient", "id": "42"},
           "attrs": {"patient_id": "42", "ward": "cardiology", "restricted": False,
                     "care_team": [{"__entity": {"type": "Clinic::User", "id": "dr-ada"}}]},
           "parents": []})
json.dump(es, open(sys.argv[1], "w"))
EOF
write_config() { # $1 file, $2 listen, $3 admin, $4 extra limits
    cat >"$1" <<EOF
listen: "127.0.0.1:$2"
admin_listen: "127.0.0.1:$3"
upstream: "http://127.0.0.1:$BACKEND"
jwt:
  issuers:
    - issuer: "https://idp.bench.wardgate"
      audiences: ["records-api"]
      jwks_file: jwks.json
      algorithms: ["RS256"]
policies:
  dir: policies
  schema: policies/clinic.cedarschema
  entities: policies/entities.json
routes:
  - { method: GET,  path: "/patients",            action: ListPatients, resource: { type: PatientList, id: "all" } }
  - { method: GET,  path: "/patients/{id}",       action: ReadPatient,  resource: { type: Patient, id: "{id}" } }
  - { method: GET,  path: "/patients/{id}/notes", action: ReadNotes,    resource: { type: Patient, id: "{id}" } }
  - { method: POST, path: "/patients/{id}/notes", action: WriteNote,    resource: { type: Patient, id: "{id}" } }
audit:
  sinks:
    - { type: file, path: "audit-$2.jsonl" }
limits:
$4
EOF
}
write_config "$WORK/wg.yaml" $WG $WG_ADMIN "  max_header_bytes: 16384"
# "A new token on every request": nothing cached, every request pays verification and Cedar.
write_config "$WORK/wg-nocache.yaml" $WG_NOCACHE $WG_NOCACHE_ADMIN "  token_cache_entries: 0
  decision_cache_entries: 0"
# The forwarding path alone (examples/bare_forwarder.rs): hyper-util's legacy Client, the
# textbook forwarder; and wardgate's own upstream pool with nothing else of wardgate around it.
taskset -c 0 "$BARE" "127.0.0.1:$BARE_LEGACY" "127.0.0.1:$BACKEND" legacy &
BARE_LEGACY_PID=$!; PIDS+=($BARE_LEGACY_PID)
taskset -c 0 "$BARE" "127.0.0.1:$BARE_POOL" "127.0.0.1:$BACKEND" pool &
BARE_POOL_PID=$!; PIDS+=($BARE_POOL_PID)
WARDGATE_LOG=warn taskset -c 0 "$WARDGATE" run --config "$WORK/wg.yaml" 2>"$WORK/wg.log" &
WG_PID=$!; PIDS+=($WG_PID)
WARDGATE_LOG=warn taskset -c 0 "$WARDGATE" run --config "$WORK/wg-nocache.yaml" 2>"$WORK/wg-nocache.log" &
WG_NC_PID=$!; PIDS+=($WG_NC_PID)

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
for p in $BACKEND $NGINX_PROXY $HAPROXY_PORT $BARE_LEGACY $BARE_POOL $WG $WG_NOCACHE; do wait_port "$p"; done
for p in $WG $WG_NOCACHE; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$p/patients/42")
    [ "$code" = 200 ] || { echo "wardgate on $p answered $code, not 200"; cat "$WORK"/wg*.log; exit 1; }
done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
IDLE_RSS=$(rss_kib $WG_PID)

# run NAME PORT CONC PID-to-charge(optional)
declare -A RPS P50 P99 CPU
run() {
    local name=$1 port=$2 conc=$3 pid=${4:-}
    taskset -c 1 wrk -t1 -c"$conc" -d"${WARMUP}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/patients/42" >/dev/null
    local t0=0; [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
    local perf_pid= traced=
    [[ $name == wardgate* ]] && traced=$pid
    if [ -n "$traced" ] && [ -n "${PERF_DIR:-}" ]; then
        mkdir -p "$PERF_DIR"
        perf record -q -e cpu-clock -g -p "$pid" -o "$PERF_DIR/$name-$conc.data" 2>/dev/null &
        perf_pid=$!
    elif [ -n "$traced" ] && [ -n "${STRACE_DIR:-}" ]; then
        mkdir -p "$STRACE_DIR"
        strace -c -f -p "$pid" -o "$STRACE_DIR/$name-$conc.txt" 2>/dev/null &
        perf_pid=$!
    fi
    local out; out=$(taskset -c 1 wrk -t1 -c"$conc" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/patients/42")
    [ -z "$perf_pid" ] || { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
    local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    local reqs; reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    local non2xx; non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    [ -z "$non2xx" ] || { echo "$name: $non2xx non-2xx answers"; exit 1; }
    RPS[$name/$conc]=$rps
    P50[$name/$conc]=$(awk '$1=="50%" {print $2}' <<<"$out")
    P99[$name/$conc]=$(awk '$1=="99%" {print $2}' <<<"$out")
    if [ -n "$pid" ]; then
        local t1; t1=$(cpu_ticks "$pid")
        CPU[$name/$conc]=$(python3 -c "print(round(($t1-$t0)*1e6/$(getconf CLK_TCK)/$reqs, 1))")
    else
        CPU[$name/$conc]="-"
    fi
}

TARGETS=${TARGETS:-backend nginx haproxy-jwt bare-hyper bare-pool wardgate wardgate-nocache}
selected() { [[ " $TARGETS " == *" $1 "* ]]; }
for c in 16 64; do
    selected backend && run backend $BACKEND $c
    selected nginx && run nginx $NGINX_PROXY $c $NGINX_PROXY_PID
    selected haproxy-jwt && run haproxy-jwt $HAPROXY_PORT $c $HAPROXY_PID
    selected bare-hyper && run bare-hyper $BARE_LEGACY $c $BARE_LEGACY_PID
    selected bare-pool && run bare-pool $BARE_POOL $c $BARE_POOL_PID
    selected wardgate && run wardgate $WG $c $WG_PID
    selected wardgate-nocache && run wardgate-nocache $WG_NOCACHE $c $WG_NC_PID
done
LOAD_RSS=$(rss_kib $WG_PID)

# RSS over a sustained load (SOAK seconds, default 60; 0 skips): sampled every 10 s.
SOAK=${SOAK:-60}
SOAK_RSS=()
if [ "$SOAK" -gt 0 ] && selected wardgate; then
    taskset -c 1 wrk -t1 -c64 -d"${SOAK}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$WG/patients/42" >/dev/null &
    SOAK_WRK=$!
    for _ in $(seq $((SOAK / 10))); do sleep 10; SOAK_RSS+=("$(rss_kib $WG_PID)"); done
    wait $SOAK_WRK || true
fi

# 1,000 idle keep-alive connections.
python3 - $WG "$TOKEN" <<'EOF' &
import socket, sys, time
port, token = int(sys.argv[1]), sys.argv[2]
socks = []
for _ in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /patients/42 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    s.recv(4096)
    socks.append(s)
time.sleep(3)
EOF
HOLDER=$!
sleep 2.5
CONN_RSS=$(rss_kib $WG_PID)
wait $HOLDER || true

# CPU µs/req: the proxy process's own user + system time per request (not the backend's).
printf '\n%-18s %6s %10s %9s %9s %10s %12s\n' target conc req/s p50 p99 "CPU µs/req" "vs nginx"
for c in 16 64; do
    for t in $TARGETS; do
        ratio=-
        [ -z "${RPS[nginx/$c]:-}" ] || ratio=$(python3 -c "print(f'{${RPS[$t/$c]}/${RPS[nginx/$c]}:.2f}x')")
        printf '%-18s %6s %10s %9s %9s %10s %12s\n' "$t" "$c" "${RPS[$t/$c]}" "${P50[$t/$c]}" "${P99[$t/$c]}" "${CPU[$t/$c]}" "$ratio"
    done
done
selected wardgate-nocache && selected haproxy-jwt && python3 -c "print(f'\nwardgate-nocache vs HAProxy jwt_verify: c=16 {${RPS[wardgate-nocache/16]}/${RPS[haproxy-jwt/16]}:.2f}x, c=64 {${RPS[wardgate-nocache/64]}/${RPS[haproxy-jwt/64]}:.2f}x')"
echo
echo "wardgate RSS: idle ${IDLE_RSS} KiB, after the load runs ${LOAD_RSS} KiB, holding 1,000 idle keep-alive connections ${CONN_RSS} KiB"
[ ${#SOAK_RSS[@]} -eq 0 ] || echo "wardgate RSS every 10 s of a ${SOAK} s run at c=64: ${SOAK_RSS[*]} KiB"
# Every request left a record: stop wardgate (which flushes the trail), count, verify the chain
# across the rotated files (oldest first, the active file last: the glob sorts them so).
kill $WG_PID $WG_NC_PID; wait $WG_PID $WG_NC_PID 2>/dev/null || true
for port in $WG $WG_NOCACHE; do
    files=("$WORK"/audit-$port*.jsonl)
    echo "audit records ($port): $(cat "${files[@]}" | wc -l) in ${#files[@]} file(s); $("$WARDGATE" audit verify "${files[@]}")"
done
