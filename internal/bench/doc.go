// Package bench runs the same workloads on a reflinkfs mount and on an XFS
// file system with reflink (mkfs.xfs -m reflink=1 on a loop device) in one
// run, and reports both with their ratio: markdown tables, a JSON file of
// every sample, and PNG plots. It is the engine of `reflinkfs bench`.
//
// Invariants:
//   - Everything the run creates (backing file, loop device, XFS mount,
//     reflinkfs image and daemon, temporary directories) is registered with
//     the Env before it exists and is torn down by Env.Close, also on error
//     and on cancellation; Close uses its own context so a cancelled run
//     still unmounts.
//   - Every figure is the median of several samples taken in the same run;
//     within each repetition the two file systems are measured back to back,
//     in alternating order, so machine noise falls on both alike. The JSON
//     keeps every sample, not only the medians.
//   - "Cold" means: sync, drop the kernel's caches, and for reflinkfs also
//     remount the image, which empties the daemon's block cache (there is no
//     remote call for that yet).
//
// The pure pieces (parsers of tool output, medians, formatting, tables,
// plots) are unit tested; the whole pipeline runs in a test only when
// REFLINKFS_BENCH_TEST=1, because benchmarks are not timed tests.
package bench
