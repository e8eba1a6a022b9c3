#!/usr/bin/env bash
# scripts/bench mount: the kelp mount against libfuse3's passthrough_ll example over a
# directory on the same disk, in one run. Needs root (mounts, drop_caches).
#   sequential write 1 GiB (dd bs=1M conv=fsync), sequential read 1 GiB after dropping
#   caches, 10,000 files of 4 KiB (create+write, stat, unlink: with the mount's default
#   -trashDays=1 an unlink moves the file to /.trash), and the mount's peak RSS
#   during a 4 GiB copy; then `tar -xf` of /usr/include, `ls -lR` and `grep -r` of that
#   tree, caches dropped before each (seconds; the ratio is passthrough's time / kelp's).
#   SIZE_MB / FILES / BIG_MB shrink it for a quick look. ROUNDS (1) runs the whole set
#   that many times, passthrough_ll and kelp alternated, and prints each round's ratios
#   and their median (a rate of passthrough_ll alone moves 2x between runs here).
set -euo pipefail
kelp=$1
size_mb=${SIZE_MB:-1024}
files=${FILES:-10000}
big_mb=${BIG_MB:-4096}
source "$(dirname "$0")/lib.sh"
bench_init mount
mounts+=("$work/kelp")

start_passthrough
mkdir -p "$work/kelp" "$work/data"

"$kelp" server -dir="$work/data" -master.port=0 -volume.port=0 -readyFile="$work/master" \
	2>"$work/server.log" &
pids+=($!)
wait_for "$work/master" 20
"$kelp" mount -dir="$work/kelp" -master="127.0.0.1:$(cat "$work/master")" -meta="$work/meta" \
	2>"$work/mount.log" &
mount_pid=$!
pids+=($mount_pid)
wait_for "$work/kelp" 20

secs() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {printf "%.1f", n / (b - a)}'; }

rounds=${ROUNDS:-1}
declare -A result
for ((round = 1; round <= rounds; round++)); do
for fs in pt kelp; do
	dir="$work/$fs"
	t0=$(secs)
	dd if=/dev/zero of="$dir/big" bs=1M count="$size_mb" conv=fsync status=none
	t1=$(secs)
	result[$fs.write]=$(rate "$size_mb" "$t0" "$t1")
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(secs)
	dd if="$dir/big" of=/dev/null bs=1M status=none
	t1=$(secs)
	result[$fs.read]=$(rate "$size_mb" "$t0" "$t1")
	rm -f "$dir/big"
	head -c 4096 /dev/urandom >"$work/4k"
	mkdir -p "$dir/small"
	t0=$(secs)
	/usr/bin/python3 - "$dir/small" "$files" "$work/4k" <<'PY'
import os, sys
d, n, src = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "rb").read()
for i in range(n):
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(src)
PY
	t1=$(secs)
	result[$fs.create]=$(rate "$files" "$t0" "$t1")
	echo 3 >/proc/sys/vm/drop_caches
	for op in stat unlink; do
		t0=$(secs)
		/usr/bin/python3 - "$dir/small" "$files" "$op" <<'PY'
import os, sys
d, n, op = sys.argv[1], int(sys.argv[2]), getattr(os, sys.argv[3])
for i in range(n):
    op(os.path.join(d, "f%05d" % i))
PY
		t1=$(secs)
		result[$fs.$op]=$(rate "$files" "$t0" "$t1")
	done
	rm -rf "$dir/small"
	# The tools of issue 14 over a copy of /usr/include (seconds; caches dropped first).
	[[ -f "$work/include.tar" ]] || tar -C /usr -cf "$work/include.tar" include
	mkdir -p "$dir/tree"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(secs)
	tar -C "$dir/tree" -xf "$work/include.tar"
	t1=$(secs)
	result[$fs.tar]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(secs)
	ls -lR "$dir/tree" >/dev/null
	t1=$(secs)
	result[$fs.ls]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
	echo 3 >/proc/sys/vm/drop_caches
	t0=$(secs)
	grep -r kelp_no_such_string "$dir/tree" >/dev/null || true
	t1=$(secs)
	result[$fs.grep]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
	rm -rf "$dir/tree"
done
for t in write read create stat unlink tar ls grep; do
	for fs in pt kelp; do result[$round.$fs.$t]=${result[$fs.$t]}; done
done
done

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), disk: $(df -h /var/tmp | awk 'NR==2 {print $1}')"
entries=$(tar -tf "$work/include.tar" | wc -l)
ratio() { # round test
	local a=${result[$1.kelp.$2]} b=${result[$1.pt.$2]}
	case $2 in
	tar | ls | grep) awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", b / a}' ;;
	*) awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}' ;;
	esac
}
printf '%-28s %12s %12s %8s\n' "test" "passthrough" "kelp" "ratio"
for t in write read create stat unlink tar ls grep; do
	case $t in
	write | read) label="$t (MiB/s)" ;;
	create | stat | unlink) label="$t (files/s)" ;;
	*) label="$t (s, $entries entries)" ;;
	esac
	ratios=()
	for ((round = 1; round <= rounds; round++)); do
		ratios+=("$(ratio "$round" "$t")")
		printf '%-28s %12s %12s %8s\n' "$label$([[ $rounds -gt 1 ]] && echo " #$round")" \
			"${result[$round.pt.$t]}" "${result[$round.kelp.$t]}" "${ratios[-1]}"
	done
	if ((rounds > 1)); then
		printf '%-28s %12s %12s %8s\n' "$t: median ratio" "" "" \
			"$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : sprintf("%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2)}')"
	fi
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# Peak memory of the mount during a big copy.
dd if=/dev/zero of="$work/pt-src/bigsrc" bs=1M count="$big_mb" status=none
cp "$work/pt-src/bigsrc" "$work/kelp/bigcopy"
echo "kelp mount peak RSS during a ${big_mb} MiB copy: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$mount_pid/status)"
cmp "$work/pt-src/bigsrc" "$work/kelp/bigcopy" && echo "copy verified"
