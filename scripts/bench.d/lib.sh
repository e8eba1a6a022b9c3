# Shared by the shell benchmarks of scripts/bench.d (sourced, not run): a work directory
# under /var/tmp that goes at exit with every mount in $mounts and process in $pids,
# waiting for ready files and mount points, and libfuse3's passthrough_ll example built
# as the reference filesystem.

# bench_init NAME: $work (a new directory), $pids and $mounts (empty), the cleanup trap.
bench_init() {
	work=$(mktemp -d "/var/tmp/kelp-bench-$1.XXXXXX")
	pids=()
	mounts=()
	trap bench_cleanup EXIT
}

bench_cleanup() {
	for m in "${mounts[@]}"; do fusermount3 -u -z "$m" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}

wait_for() { # file or mountpoint, seconds
	for ((i = 0; i < $2 * 50; i++)); do
		# a directory counts once it is a mount point (a directory's size is never 0)
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

# start_passthrough: passthrough_ll, built from the example shipped with libfuse3-dev,
# mounted on $work/pt over $work/pt-src.
start_passthrough() {
	local ex=/usr/share/doc/libfuse3-dev/examples

	cp "$ex/passthrough_ll.c" "$ex/passthrough_helpers.h" "$work/"
	gcc -O2 -Wall "$work/passthrough_ll.c" $(pkg-config fuse3 --cflags --libs) \
		-o "$work/passthrough_ll"
	mkdir -p "$work/pt" "$work/pt-src"
	mounts+=("$work/pt")
	"$work/passthrough_ll" -o source="$work/pt-src" "$work/pt" &
	pids+=($!)
	wait_for "$work/pt" 10
}
