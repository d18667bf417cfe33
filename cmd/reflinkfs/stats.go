package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/control"
	"github.com/spf13/cobra"
)

func newStatsCommand() *cobra.Command {
	var asJSON, dropCache bool
	cmd := &cobra.Command{
		Use:   "stats [--json] MOUNTPOINT",
		Short: "Show cache and space statistics of a mounted image",
		Long: `Show the running daemon's statistics: the block cache (size, limit, what a
per-file page cache would hold for the same reads, and so the memory saved by
sharing, hit rate) and the space on the data device (used, logical, shared).

The daemon is reached through the control socket IMAGE/control.sock; the image
is found from the mount's source in /proc/self/mountinfo. MOUNTPOINT may also
be the image directory itself.

--json prints every statistic under a snake_case key (cached_bytes,
used_bytes, ..., hit_rate, memory_saved_bytes).

--drop-cache first makes the daemon write back and evict its block cache
(like writing 3 to /proc/sys/vm/drop_caches, which does not reach it), then
prints the statistics: for measuring cold reads without a remount.

Known limit: pages of files mapped with mmap(MAP_SHARED) live in the kernel
page cache of each file (one copy per clone), not in the shared block cache,
and are not counted here. Reads and writes through read(2)/write(2) bypass the
kernel page cache and are counted.`,
		Example: `  reflinkfs stats /mnt/reflinkfs
  reflinkfs stats --json /mnt/reflinkfs | jq .used_bytes
  reflinkfs stats --drop-cache /mnt/reflinkfs   # empty the cache first`,
		Args: exactArgs("MOUNTPOINT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			image, _, err := resolveImage(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			client := control.NewClient(filepath.Join(image, control.SocketName))
			var r control.Report
			if dropCache {
				r, err = client.DropCache(ctx)
			} else {
				r, err = client.Report(ctx)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			printStats(os.Stdout, image, r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object with snake_case keys")
	cmd.Flags().BoolVar(&dropCache, "drop-cache", false, "first write back and evict the daemon's block cache")
	return cmd
}

// printStats writes the human-readable table.
func printStats(out io.Writer, image string, r control.Report) {
	var w strings.Builder
	defer func() { // tabwriter pads the value column of rows without a note
		for _, line := range strings.SplitAfter(w.String(), "\n") {
			io.WriteString(out, strings.TrimRight(line, " \n")+strings.Repeat("\n", strings.Count(line, "\n")))
		}
	}()
	tw := tabwriter.NewWriter(&w, 0, 0, 2, ' ', 0)
	pct := func(part, whole int64) string {
		if whole <= 0 {
			return ""
		}
		return fmt.Sprintf("(%.1f%%)", 100*float64(part)/float64(whole))
	}
	ratio := func(a, b int64) string {
		if b <= 0 {
			return ""
		}
		return fmt.Sprintf("(%.2fx)", float64(a)/float64(b))
	}
	row := func(name, value, note string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", name, value, note) }

	fmt.Fprintf(&w, "image %s\n\n", image)
	fmt.Fprintln(&w, "block cache")
	row("  limit", formatBytes(r.CacheLimitBytes), "")
	row("  cached", formatBytes(r.CachedBytes), pct(r.CachedBytes, r.CacheLimitBytes))
	row("  dirty", formatBytes(r.DirtyBytes), "")
	row("  shared cached", formatBytes(r.SharedCachedBytes), "read by more than one file")
	row("  per-file-cache equivalent", formatBytes(r.PerFileCachedBytes), ratio(r.PerFileCachedBytes, r.CachedBytes)+" what one copy per file would take")
	row("  memory saved", formatBytes(r.MemorySavedBytes), "")
	row("  hit rate", fmt.Sprintf("%.1f%%", 100*r.HitRate), fmt.Sprintf("%d hits, %d misses, %d evictions", r.CacheHits, r.CacheMisses, r.CacheEvictions))
	tw.Flush()
	fmt.Fprintln(&w, "\ndata device")
	row("  size", formatBytes(r.DeviceBytes), "")
	row("  used", formatBytes(r.UsedBytes), pct(r.UsedBytes, r.DeviceBytes))
	row("  free", formatBytes(r.FreeBytes), "")
	row("  logical", formatBytes(r.LogicalBytes), ratio(r.LogicalBytes, r.UsedBytes)+" file contents counting each clone")
	row("  shared", formatBytes(r.SharedBytes), "blocks referenced more than once")
	row("  inodes", fmt.Sprint(r.Inodes), "")
	if r.ReapingFiles > 0 {
		row("  being freed", fmt.Sprint(r.ReapingFiles), "deleted files whose blocks are freed in the background")
	}
	row("  copies shared", fmt.Sprint(r.CopySharedBlocks), formatBytes(r.CopySharedBlocks*r.BlockSize)+" written as copies of blocks just read, shared with them (copyshare)")
	row("  copies' holes", fmt.Sprint(r.CopyHoleBlocks), "zero blocks copied from holes, kept as holes")
	row("  checksum errors", fmt.Sprint(r.ChecksumErrors), "")
	row("  commits", fmt.Sprint(r.Commits), "")
	tw.Flush()
	p := r.Passthrough
	if p == nil {
		return
	}
	fmt.Fprintf(&w, "\nkernel page cache sharing (FUSE passthrough, share=%s)\n", p.Mode)
	if p.Unavailable != "" {
		fmt.Fprintf(&w, "  off: %s\n", p.Unavailable)
		fmt.Fprintln(&w, "  mapped pages (mmap, exec) are cached by the kernel once per file")
		return
	}
	row("  backing files", fmt.Sprint(p.BackingFiles), fmt.Sprintf("%d in use; one per distinct content read", p.BackingFilesInUse))
	row("  backing size", formatBytes(p.BackingBytes), "snapshots sharing the files' blocks: no extra disk")
	row("  page cache", formatBytes(p.BackingCachedBytes), "kernel page cache of the backing files, shared by every clone")
	row("  passthrough opens", fmt.Sprint(p.Opens), fmt.Sprintf("%d open now", p.OpenNow))
	row("  writers refused", fmt.Sprint(p.Refused), "writable opens and truncates while passthrough readers were open (ETXTBSY)")
	reasons := make([]string, 0, len(p.Fallbacks))
	for k := range p.Fallbacks {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		row("  not passed through", fmt.Sprint(p.Fallbacks[k]), k)
	}
	tw.Flush()
}
