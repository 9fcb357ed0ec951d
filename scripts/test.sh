#!/usr/bin/env bash
# The whole test suite: static checks, then every Go test against a real
# SQLite file, a real Postgres server and (for the browser tests) a real
# headless Chromium.
#
# The Stripe tests run stripe-mock, a Go tool pinned in go.mod (built below).
#
# Postgres: set TEST_DATABASE_URL to a server where the tests may create and
# drop databases. Unset, and running as root on Debian (CI, a fresh VM), this
# script installs PostgreSQL, Chromium, Patroni and etcd with apt-get and
# starts Postgres itself (the failover test starts its own Patroni cluster
# with scripts/ha-cluster.sh, on ports 5541-5543).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH)/bin"

if [ -z "${TEST_DATABASE_URL:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
  command -v chromium >/dev/null || need+=(chromium)
  # The failover test (internal/storetest/failover_test.go) runs a Patroni
  # cluster with etcd through scripts/ha-cluster.sh.
  command -v patroni >/dev/null || need+=(patroni)
  command -v etcd >/dev/null || need+=(etcd-server)
  if ((${#need[@]})); then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  pg_lsclusters -h | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main start 2>/dev/null || true # already running is fine
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
  su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  export TEST_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
fi
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  echo "warning: TEST_DATABASE_URL unset: the Postgres cases will be skipped" >&2
fi

echo "== static checks"
unformatted=$(gofmt -l . | grep -v '^vendor/' || true)
[ -z "$unformatted" ] || { echo "gofmt would change: $unformatted"; exit 1; }
go vet ./...
go tool templ generate -check >/dev/null || { echo "views/*_templ.go are stale: run go tool templ generate"; exit 1; }
CGO_ENABLED=0 go build -o /dev/null .

# stripe-mock (Stripe's API simulator, for the PAYMENT_PROVIDER=stripe tests)
# is a Go tool pinned in go.mod: the go command builds it from the module
# cache (the module proxy is all it needs) into the build cache, where
# internal/stripetest finds it with the same command. Building it here once
# keeps a cold build (minutes on a fresh 2-core machine) out of any test's
# timing and fails early, with the compiler's words, if it cannot be built.
echo "== stripe-mock"
go tool -n stripe-mock >/dev/null

echo "== go test"
go test -count=1 -timeout 45m "$@" ./...
