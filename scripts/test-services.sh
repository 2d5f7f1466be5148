#!/usr/bin/env bash
# Throwaway servers for the journal tests that need services: a PostgreSQL cluster
# (BULWARK_TEST_POSTGRES_URL) and an S3 endpoint, moto_server (BULWARK_TEST_S3_ENDPOINT).
# Both listen on 127.0.0.1 only, live in temporary directories and are stopped on exit.
#
#   source scripts/test-services.sh; start_test_services   # what scripts/test.sh does
#   scripts/test-services.sh cargo test -p bulwark-journal  # wrap one command
#
# A URL/endpoint already set in the environment is used as is. Without a PostgreSQL
# server (postgresql-15 on Debian) or Python's venv, the tests needing it are skipped
# (one line says so). BULWARK_TEST_SERVICES=0 starts nothing.
# Sourcing installs an EXIT trap (and INT/TERM traps that exit through it).

# moto's S3 backend and the two packages its server needs: under half of
# moto[server]'s install (~15 s, 140 MB instead of ~45 s, 320 MB: that extra brings
# every AWS service's dependencies).
BULWARK_MOTO_SPEC=("moto[s3]==5.2.5" "flask==3.1.3" "flask-cors==6.0.5")
_bw_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_bw_pg_dir=""
_bw_pg_bin=""
_bw_pg_as=()
_bw_moto_pid=""
_bw_moto_dir=""

_bw_now_ms() { date +%s%3N; }

_bw_elapsed() { # start_ms -> "1.2 s"
  local ms=$(($(_bw_now_ms) - $1))
  printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100))
}

# The preferred port when it is free on 127.0.0.1, else any free one.
_bw_free_port() {
  python3 - "$1" <<'EOF'
import socket, sys
def free(port):
    s = socket.socket()
    # As the servers bind: a port whose old connections linger in TIME_WAIT is free.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return s.getsockname()[1]
    except OSError:
        return None
    finally:
        s.close()
print(free(int(sys.argv[1])) or free(0))
EOF
}

# Any HTTP answer from the URL (S3 may well say 403/404 to a bare GET).
_bw_http_up() {
  if command -v curl >/dev/null; then
    curl -s -o /dev/null --max-time 1 "$1"
  else
    python3 - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass
EOF
  fi
}

# Newest PostgreSQL server install: a bin dir with initdb, pg_ctl and postgres.
_bw_pg_bindir() {
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV) "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")"; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

_bw_start_postgres() {
  if [ -n "${BULWARK_TEST_POSTGRES_URL:-}" ]; then
    echo "test services: PostgreSQL tests use the BULWARK_TEST_POSTGRES_URL already set"
    return 0
  fi
  if ! _bw_pg_bin="$(_bw_pg_bindir)"; then
    echo "test services: no PostgreSQL server found (Debian: apt-get install postgresql); the PostgreSQL journal tests will be skipped"
    return 0
  fi
  local t0 port psql
  t0=$(_bw_now_ms)
  _bw_pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/bulwark-pg.XXXXXX")"
  # PostgreSQL refuses to run as root: the cluster belongs to `postgres` then.
  if [ "$(id -u)" = 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
      echo "test services: running as root but there is no 'postgres' user to own the cluster" >&2
      return 1
    fi
    chown postgres: "$_bw_pg_dir"
    if command -v runuser >/dev/null; then
      _bw_pg_as=(runuser -u postgres --)
    else
      _bw_pg_as=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
  fi
  port=$(_bw_free_port 5432)
  # Local socket (in the temp dir) trusted for the set-up below; TCP needs the password.
  if ! (cd "$_bw_pg_dir" && "${_bw_pg_as[@]}" "$_bw_pg_bin/initdb" -D "$_bw_pg_dir/data" \
        -U postgres -A trust --auth-host=scram-sha-256 -E UTF8 --no-locale -N \
        >"$_bw_pg_dir/initdb.log" 2>&1); then
    echo "test services: initdb failed:" >&2
    tail -n 20 "$_bw_pg_dir/initdb.log" >&2
    return 1
  fi
  # fsync off: a throwaway cluster, nothing here has to survive a power cut.
  if ! (cd "$_bw_pg_dir" && "${_bw_pg_as[@]}" "$_bw_pg_bin/pg_ctl" -D "$_bw_pg_dir/data" \
        -l "$_bw_pg_dir/server.log" -w -t 30 -s \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $_bw_pg_dir -c fsync=off -c full_page_writes=off" \
        start >/dev/null); then
    echo "test services: PostgreSQL did not start on 127.0.0.1:$port:" >&2
    tail -n 20 "$_bw_pg_dir/server.log" >&2
    return 1
  fi
  psql="$_bw_pg_bin/psql"
  [ -x "$psql" ] || psql=psql
  "$psql" -X -q -v ON_ERROR_STOP=1 -h "$_bw_pg_dir" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE bulwark LOGIN PASSWORD 'bulwark'" \
    -c "CREATE DATABASE bulwark_test OWNER bulwark" >/dev/null
  export BULWARK_TEST_POSTGRES_URL="postgres://bulwark:bulwark@127.0.0.1:$port/bulwark_test?sslmode=disable"
  echo "test services: PostgreSQL $("$_bw_pg_bin/postgres" -V | awk '{print $3}') on 127.0.0.1:$port ($(_bw_elapsed "$t0"))"
}

_bw_stop_postgres() {
  [ -n "$_bw_pg_dir" ] || return 0
  if [ -f "$_bw_pg_dir/data/postmaster.pid" ]; then
    (cd "$_bw_pg_dir" && "${_bw_pg_as[@]}" "$_bw_pg_bin/pg_ctl" -D "$_bw_pg_dir/data" -m immediate -s stop) >/dev/null 2>&1 || true
  fi
  rm -rf "$_bw_pg_dir"
  _bw_pg_dir=""
}

_bw_start_moto() {
  if [ -n "${BULWARK_TEST_S3_ENDPOINT:-}" ]; then
    echo "test services: the S3 backup test uses the BULWARK_TEST_S3_ENDPOINT already set"
    return 0
  fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "test services: Python's venv is missing (Debian: apt-get install python3-venv); the S3 backup test will be skipped"
    return 0
  fi
  local t0 venv="$_bw_root/.venv-moto" port
  t0=$(_bw_now_ms)
  # Installed once per checkout; the stamp records what, so a changed pin reinstalls.
  if [ "$(cat "$venv/.bulwark-spec" 2>/dev/null)" != "${BULWARK_MOTO_SPEC[*]}" ]; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${BULWARK_MOTO_SPEC[@]}"
    echo "${BULWARK_MOTO_SPEC[*]}" >"$venv/.bulwark-spec"
  fi
  port=$(_bw_free_port 5000)
  _bw_moto_dir="$(mktemp -d "${TMPDIR:-/tmp}/bulwark-moto.XXXXXX")"
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$_bw_moto_dir/server.log" 2>&1 &
  _bw_moto_pid=$!
  local i
  for i in $(seq 150); do # 30 s at most
    if _bw_http_up "http://127.0.0.1:$port/"; then
      export BULWARK_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
      export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
      unset AWS_SESSION_TOKEN
      # The test creates its bucket (BULWARK_TEST_S3_BUCKET, default bulwark-test) itself.
      echo "test services: moto_server ${BULWARK_MOTO_SPEC[0]#*==} (S3) on 127.0.0.1:$port ($(_bw_elapsed "$t0"))"
      return 0
    fi
    if ! kill -0 "$_bw_moto_pid" 2>/dev/null; then
      break
    fi
    sleep 0.2
  done
  echo "test services: moto_server did not answer on 127.0.0.1:$port:" >&2
  tail -n 20 "$_bw_moto_dir/server.log" >&2
  return 1
}

_bw_stop_moto() {
  if [ -n "$_bw_moto_pid" ]; then
    kill "$_bw_moto_pid" 2>/dev/null || true
    wait "$_bw_moto_pid" 2>/dev/null || true
    _bw_moto_pid=""
  fi
  if [ -n "$_bw_moto_dir" ]; then
    rm -rf "$_bw_moto_dir"
    _bw_moto_dir=""
  fi
}

stop_test_services() {
  _bw_stop_moto
  _bw_stop_postgres
}

start_test_services() {
  if [ "${BULWARK_TEST_SERVICES:-1}" = 0 ]; then
    echo "test services: BULWARK_TEST_SERVICES=0, starting none (tests needing them skip unless their variables are set)"
    return 0
  fi
  trap stop_test_services EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  _bw_start_postgres
  _bw_start_moto
}

# Run directly: start the services, run the given command, stop them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]   (or source it and call start_test_services)" >&2
    exit 2
  fi
  start_test_services
  "$@"
fi
