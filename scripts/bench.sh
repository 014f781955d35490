#!/usr/bin/env bash
# Runs the project's Go benchmarks and writes them, with the machine and the
# date, to the Markdown file named by $1. Figures are from one run on a
# shared machine: compare ratios measured in the same run, not across runs.
set -euo pipefail
out=${1:-BENCHMARKS.md}
benchtime=${BENCHTIME:-1x}
tmp=$(mktemp)
kept=$(mktemp)
trap 'rm -f "$tmp" "$kept"' EXIT
# Everything below the marker line in $out was written by hand (figures
# from other runs, with their dates): kept as it is, after the new table.
marker='<!-- make bench writes everything above this line; what follows is kept -->'
if [ -f "$out" ] && grep -qxF "$marker" "$out"; then
  awk -v m="$marker" 'found { print } $0 == m { found = 1 }' "$out" > "$kept"
elif [ -f "$out" ]; then
  echo "bench.sh: $out has no line '$marker'; refusing to overwrite what it holds (add the line where the generated part ends)" >&2
  exit 1
fi
pkgs=$(go list ./... | while read -r p; do
  dir=$(go list -f '{{.Dir}}' "$p")
  if grep -qs '^func Benchmark' "$dir"/*_test.go; then echo "$p"; fi
done)
echo "benchmarking: $pkgs" >&2
# -run '^$' skips the tests; each benchmark decides its own sizes.
# -p 1: one package's benchmarks at a time, so that no two benchmarks
# share the cores (or the memory) and the ratios are each one's own.
go test -p 1 -run '^$' -bench . -benchtime "${benchtime}" -benchmem -timeout 90m $pkgs | tee "$tmp" >&2
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (scripts/bench.sh). One run; the machine is shared, so read ratios"
  echo "measured in the same run rather than absolute figures across runs."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "- go: $(go version | cut -d' ' -f3-)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "| package | benchmark | iterations | metrics |"
  echo "|---|---|---|---|"
  pkg=""
  while IFS= read -r line; do
    case "$line" in
      pkg:*) pkg=${line#pkg: }; pkg=${pkg#github.com/tallyfl/tally/} ;;
      Benchmark*)
        name=$(echo "$line" | awk '{print $1}' | sed 's/-[0-9]*$//')
        iters=$(echo "$line" | awk '{print $2}')
        metrics=$(echo "$line" | awk '{ s=""; for (i=3; i<NF; i+=2) s=s (s==""?"":", ") $i " " $(i+1); print s }')
        echo "| $pkg | \`$name\` | $iters | $metrics |" ;;
    esac
  done < "$tmp"
  echo
  echo "$marker"
  cat "$kept"
} > "$out.new"
mv "$out.new" "$out"
echo "wrote $out" >&2
