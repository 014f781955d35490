#!/usr/bin/env bash
# Runs every Go fuzz target of the project for $1 (default 60s) each.
set -euo pipefail
t=${1:-60s}
found=0
for p in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$p")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    found=$((found+1))
    echo "== $p $f ($t)"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" "$p"
  done
done
echo "$found fuzz targets run"
