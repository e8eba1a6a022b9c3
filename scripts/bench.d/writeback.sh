#!/usr/bin/env bash
# scripts/bench writeback: small files on libfuse3's passthrough_ll, on the kelp mount, and
# on the kelp mount with -writeback, in one run (ROUNDS times, alternated). Needs root.
#   create + write 4 KiB + close of FILES files (files/s), then `tar -xf` of /usr/include
#   (caches dropped first; seconds); for -writeback also the time until its journal is
#   empty after the tar (the uploads catching up).
set -euo pipefail
kelp=$1
files=${FILES:-5000}
rounds=${ROUNDS:-2}
source "$(dirname "$0")/lib.sh"
bench_init wb
mounts+=("$work/kelp" "$work/wb")

start_passthrough
mkdir -p "$work/kelp" "$work/wb" "$work/data"

"$kelp" server -dir="$work/data" -master.port=0 -volume.port=0 -readyFile="$work/master" \
	2>"$work/server.log" &
pids+=($!)
wait_for "$work/master" 20
master="127.0.0.1:$(cat "$work/master")"
"$kelp" mount -dir="$work/kelp" -master="$master" -meta="$work/meta" -trashDays=0 \
	2>"$work/mount.log" &
pids+=($!)
"$kelp" mount -dir="$work/wb" -master="$master" -meta="$work/meta-wb" -trashDays=0 -writeback \
	-writebackMB=1024 2>"$work/mount-wb.log" &
pids+=($!)
wait_for "$work/kelp" 20
wait_for "$work/wb" 20

secs() { date +%s.%N; }
journal_empty() { ! compgen -G "$work/meta-wb/cache/journal/*.wbj" >/dev/null; }
tar -C /usr -cf "$work/include.tar" include
entries=$(tar -tf "$work/include.tar" | wc -l)
head -c 4096 /dev/urandom >"$work/4k"

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), disk: $(df -h /var/tmp | awk 'NR==2 {print $1}')"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-11s %14s %10s %14s\n' round fs "create/s" "tar (s)" "drained (s)"
for ((r = 1; r <= rounds; r++)); do
	for fs in pt kelp wb; do
		dir="$work/$fs"
		mkdir -p "$dir/small"
		sync
		t0=$(secs)
		/usr/bin/python3 - "$dir/small" "$files" "$work/4k" <<'PY'
import os, sys
d, n, src = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "rb").read()
for i in range(n):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(src)
PY
		t1=$(secs)
		create=$(awk -v n="$files" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
		if [[ $fs == wb ]]; then
			for ((i = 0; i < 3000; i++)); do journal_empty && break; sleep 0.1; done
		fi
		rm -rf "$dir/small"
		mkdir -p "$dir/tree"
		sync
		echo 3 >/proc/sys/vm/drop_caches
		t0=$(secs)
		tar -C "$dir/tree" -xf "$work/include.tar"
		t1=$(secs)
		drained=-
		if [[ $fs == wb ]]; then
			for ((i = 0; i < 6000; i++)); do journal_empty && break; sleep 0.05; done
			t2=$(secs)
			drained=$(awk -v a="$t0" -v b="$t2" 'BEGIN {printf "%.2f", b - a}')
		fi
		tar_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
		printf '%-6s %-11s %14s %10s %14s\n' "$r" "$fs" "$create" "$tar_s" "$drained"
		diff -r --no-dereference /usr/include "$dir/tree/include" >/dev/null || echo "MISMATCH in $fs tree" >&2
		rm -rf "$dir/tree"
	done
done
echo "tar: $entries entries of /usr/include; fs: pt = passthrough_ll, kelp = kelp mount, wb = kelp mount -writeback"
echo "(drained: from the start of tar -xf until the write-back journal is empty)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
