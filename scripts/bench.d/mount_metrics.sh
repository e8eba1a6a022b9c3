#!/usr/bin/env bash
# scripts/bench metrics (second part): the mount without -metricsPort against the same
# binary with -metricsPort=0 and /metrics scraped every second, alternated ROUNDS (3)
# times over one `kelp server`: sequential write of SIZE_MB (256) MiB (dd bs=1M
# conv=fsync), sequential read of it by a fresh mount (empty caches; the kernel's page
# cache of a FUSE file goes with its mount), FILES (2000) files of 4 KiB created, then
# stat'ed. Needs root (mounts). Prints one line per run and the ratios.
set -euo pipefail
kelp=$1
size_mb=${SIZE_MB:-256}
files=${FILES:-2000}
rounds=${ROUNDS:-3}
source "$(dirname "$0")/lib.sh"
bench_init mm
mounts+=("$work/mnt")

mkdir -p "$work/mnt" "$work/data"
"$kelp" server -dir="$work/data" -master.port=0 -volume.port=0 -volume.max=64 \
	-readyFile="$work/master" 2>"$work/server.log" &
pids+=($!)
wait_for "$work/master" 20
master="127.0.0.1:$(cat "$work/master")"

mount_it() { # meta dir, with metrics (0/1)
	local extra=()
	rm -f "$work/mport"
	[ "$2" = 1 ] && extra=(-metricsPort=0 -metricsPortFile="$work/mport")
	"$kelp" mount -dir="$work/mnt" -master="$master" -meta="$1" -cacheCapacityMB=0 \
		"${extra[@]}" 2>>"$work/mount.log" &
	mount_pid=$!
	wait_for "$work/mnt" 20
	scraper=""
	if [ "$2" = 1 ]; then
		wait_for "$work/mport" 10
		(while sleep 1; do curl -sf "http://127.0.0.1:$(cat "$work/mport")/metrics" >/dev/null || true; done) &
		scraper=$!
	fi
}

unmount_it() {
	[ -n "$scraper" ] && { kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; }
	# the mount's CPU time (user + system, clock ticks): steadier than rates on a busy machine
	cpu_ticks=$((cpu_ticks + $(awk '{print $14 + $15}' "/proc/$mount_pid/stat")))
	fusermount3 -u "$work/mnt"
	wait "$mount_pid" 2>/dev/null || true
}

secs() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {printf "%.1f", n / (b - a)}'; }

one_run() { # label, metrics (0/1)
	local meta="$work/meta-$1-$RANDOM" t0 t1 w r c s
	cpu_ticks=0
	mount_it "$meta" "$2"
	t0=$(secs)
	dd if=/dev/zero of="$work/mnt/big" bs=1M count="$size_mb" conv=fsync status=none
	t1=$(secs)
	w=$(rate "$size_mb" "$t0" "$t1")
	unmount_it
	mount_it "$meta" "$2"
	t0=$(secs)
	dd if="$work/mnt/big" of=/dev/null bs=1M status=none
	t1=$(secs)
	r=$(rate "$size_mb" "$t0" "$t1")
	head -c 4096 /dev/urandom >"$work/4k"
	mkdir "$work/mnt/small"
	t0=$(secs)
	/usr/bin/python3 - "$work/mnt/small" "$files" "$work/4k" <<'PY'
import os, sys
d, n, src = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "rb").read()
for i in range(n):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(src)
PY
	t1=$(secs)
	c=$(rate "$files" "$t0" "$t1")
	t0=$(secs)
	/usr/bin/python3 -c 'import os, sys; [os.stat(os.path.join(sys.argv[1], n)) for n in os.listdir(sys.argv[1])]' "$work/mnt/small"
	t1=$(secs)
	s=$(rate "$files" "$t0" "$t1")
	rm -rf "$work/mnt/big" "$work/mnt/small"
	unmount_it
	echo "$1 $w $r $c $s $(awk -v t="$cpu_ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')"
}

echo "== mount: ${size_mb} MiB write/read, $files files create/stat; no metrics vs -metricsPort scraped every second, $rounds rounds"
log=$(mktemp)
for ((i = 0; i < rounds; i++)); do
	for mode in off on; do
		line=$(one_run "$mode" "$([ "$mode" = on ] && echo 1 || echo 0)")
		echo "round $i $line" | awk '{printf "round %s metrics %-3s write %s MiB/s read %s MiB/s create %s/s stat %s/s, mount CPU %s s\n", $2, $3, $4, $5, $6, $7, $8}'
		echo "$line" >>"$log"
	done
done
awk '{w[$1] += $2; r[$1] += $3; c[$1] += $4; s[$1] += $5; u[$1] += $6} END {printf "ratio (metrics on / off, sums over the rounds): write %.2f read %.2f create %.2f stat %.2f; mount CPU %.1f s / %.1f s = %.2f\n", w["on"] / w["off"], r["on"] / r["off"], c["on"] / c["off"], s["on"] / s["off"], u["on"], u["off"], u["on"] / u["off"]}' "$log"
rm -f "$log"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
