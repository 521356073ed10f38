#!/usr/bin/env bash
# Curation throughput: StackExchange Posts.xml streamed on ONE core (taskset -c 0) with a fixed
# 64 MB Java heap, on generated files of 512 MB and 2 GB built from the real coffee.stackexchange.com
# rows. Same heap for both sizes: memory does not grow with the file. Needs a build (mvn install).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=${TMPDIR:-/tmp}/limactl-bench-curation; mkdir -p "$tmp"
(cd arrow-data && mvn -B -q test-compile && mvn -B -q dependency:build-classpath -Dmdep.outputFile="$tmp/cp.txt")
cp="arrow-data/target/test-classes:arrow-data/target/classes:$(cat "$tmp/cp.txt")"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); java $(java -version 2>&1 | head -1 | cut -d'"' -f2); 1 core; -Xmx64m"
printf '%-28s %8s %8s %8s %10s\n' "pass" "MB" "s" "MB/s" "max RSS MB"
for size in 512 2048; do
  f="$tmp/posts-$size.xml"
  [ -f "$f" ] || python3 ci/make-big-posts.py "$f" "$size" >/dev/null
  /usr/bin/time -f "%M" -o "$tmp/rss" taskset -c 0 java -Xmx64m -cp "$cp" dev.limactl.data.curate.PostsXmlBenchmark "$f" > "$tmp/out"
  rss=$(( $(cat "$tmp/rss") / 1024 ))
  python3 - "$tmp/out" "$rss" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    if l.startswith("{"):
        r = json.loads(l)
        print(f"{r['what']:28} {r['mb']:8.0f} {r['seconds']:8.2f} {r['mb_per_s']:8.1f} {sys.argv[2]:>10}")
PY
done
