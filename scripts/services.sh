#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the test suite talks to, when they are installed but not running.
# A missing binary is reported, not fatal: the tests that need it skip with that reason.
set -u
if command -v redis-server >/dev/null 2>&1; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "services: starting redis" >&2
    redis-server --daemonize yes --port 6379 --save "" --appendonly no >/dev/null
  fi
else
  echo "services: redis-server not installed; Redis tests will skip" >&2
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
    echo "services: starting postgresql" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
else
  echo "services: PostgreSQL not installed; PostgreSQL tests will skip" >&2
fi
# Headless Chromium for the dashboard's browser test (Debian's package; Playwright never downloads a browser).
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "services: installing chromium for the browser test" >&2
    { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
      || echo "services: could not install chromium; the browser test will skip" >&2
  else
    echo "services: chromium not installed; the browser test will skip" >&2
  fi
fi
# nginx for the reverse-proxy test (Debian's package; the test runs it in the foreground with its own config).
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "services: installing nginx for the reverse-proxy test" >&2
    { apt-get install -y -q nginx || { apt-get update -q && apt-get install -y -q nginx; }; } >/dev/null 2>&1 \
      || echo "services: could not install nginx; the reverse-proxy test will skip" >&2
  else
    echo "services: nginx not installed; the reverse-proxy test will skip" >&2
  fi
fi
for _ in $(seq 1 30); do
  ok=1
  command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && ok=0
  command -v pg_isready >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && ok=0
  [ "$ok" = 1 ] && break
  sleep 0.5
done
exit 0
