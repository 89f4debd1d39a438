#!/usr/bin/env bash
# Start the local services the test suite may need when they are down, and install the browser (CI runs on a machine
# that starts them before each session, but one may have stopped since).
set -u
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if command -v mariadb-admin >/dev/null && ! mariadb-admin -h 127.0.0.1 -P 3306 -u root status >/dev/null 2>&1; then
  echo "starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 30); do mariadb-admin -h 127.0.0.1 -P 3306 -u root status >/dev/null 2>&1 && break; sleep 1; done
fi
# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads a browser).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the dashboard tests"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "could not install chromium; the dashboard tests will fail under DISPATCH_TEST_REQUIRE_SERVICES=1"
fi
exit 0
