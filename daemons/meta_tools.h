/* What the `kelp meta` subcommands share (daemons/meta_main.c, daemons/meta_backup.c). */
#ifndef KELP_META_TOOLS_H
#define KELP_META_TOOLS_H

#include <stdint.h>
#include <zlib.h>

struct kv;
struct dump_stats;

/* A dump_progress_fn drawing a struct tool_progress (ctx). */
void meta_tool_progress(void *ctx, uint64_t done, uint64_t total);
/* dump_open_kv with a message "kelp meta <cmd>: ..." on failure. */
int meta_tool_open_kv(const char *cmd, const char *spec, int timeout_s, struct kv **out);
/* dump_load from a gzFile (plain or gzip), with progress and a message on failure. */
int meta_tool_load(const char *cmd, struct kv *kv, gzFile in, const char *cluster_id,
		   struct dump_stats *st);

int meta_backup_main(int argc, char **argv);
int meta_restore_main(int argc, char **argv);

#endif
