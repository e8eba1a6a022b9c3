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
work=$(mktemp -d /var/tmp/kelp-bench-wb.XXXXXX)
pids=()
cleanup() {
	for m in "$work/pt" "$work/kelp" "$work/wb"; do fusermount3 -u -z "$m" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # file or mountpoint, seconds
	for ((i = 0; i < $2 * 50; i++)); do
		if [[ -d "$1" ]]; then
			mountpoint -q "$1" 2>/dev/null && return 0
		elif [[ -s "$1" ]]; then
			return 0
		fi
		sleep 0.02
	done
	echo "timed out waiting for $1" >&2
	return 1
}

ex=/usr/share/doc/libfuse3-dev/examples
cp "$ex/passthrough_ll.c" "$ex/passthrough_helpers.h" "$work/"
gcc -O2 -Wall "$work/passthrough_ll.c" $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"
mkdir -p "$work/pt" "$work/pt-src" "$work/kelp" "$work/wb" "$work/data"
"$work/passthrough_ll" -o source="$work/pt-src" "$work/pt" &
pids+=($!)
wait_for "$work/pt" 10

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
