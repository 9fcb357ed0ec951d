#!/usr/bin/env bash
# Re-fetches the one vendored file, htmx, from the npm registry and checks the
# package against the registry's published integrity hash before using it.
#
#   scripts/fetch-htmx.sh          # verify, then (re)write views/static/htmx.min.js + HTMX-LICENSE
#   scripts/fetch-htmx.sh --check  # verify, and fail if the committed copy differs from the package
#
# htmx is pinned to 2.0.x on purpose: 4.x drops "HTTP 286 stops polling" and
# swaps error responses into the page, which changes how our polling behaves.
set -euo pipefail
version=2.0.11
dest="$(cd "$(dirname "$0")/../views/static" && pwd)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expected=$(npm view "htmx.org@$version" dist.integrity)
(cd "$tmp" && npm pack --silent "htmx.org@$version" >/dev/null)
tgz="$tmp/htmx.org-$version.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tgz" | openssl base64 -A)"
if [ "$expected" != "$actual" ]; then
  echo "htmx.org@$version: integrity mismatch: registry says $expected, tarball is $actual" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$tmp" package/dist/htmx.min.js package/LICENSE

if [ "${1:-}" = "--check" ]; then
  cmp "$tmp/package/dist/htmx.min.js" "$dest/htmx.min.js"
  cmp "$tmp/package/LICENSE" "$dest/HTMX-LICENSE"
  echo "views/static/htmx.min.js is the unmodified htmx.org@$version ($expected)"
  exit 0
fi
cp "$tmp/package/dist/htmx.min.js" "$dest/htmx.min.js"
cp "$tmp/package/LICENSE" "$dest/HTMX-LICENSE"
echo "wrote htmx.org@$version to $dest ($expected)"
