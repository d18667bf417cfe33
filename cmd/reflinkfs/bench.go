package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/reflinkfs/reflinkfs/internal/bench"
	"github.com/reflinkfs/reflinkfs/internal/enginebench"
	"github.com/spf13/cobra"
)

// newBenchCommand runs the side-by-side benchmark of reflinkfs and XFS
// reflink (package internal/bench).
func newBenchCommand() *cobra.Command {
	var (
		quick, perf     bool
		out, scratch    string
		runs            int
		only, engineDir string
	)
	cmd := &cobra.Command{
		Use:   "bench [--quick] [--out DIR] [--runs N] [--only workload,...]",
		Short: "Benchmark reflinkfs against XFS reflink on this machine",
		Long: `Run the same workloads on a reflinkfs mount and on XFS with reflink, in one run,
and report both with the ratio reflinkfs/XFS: a markdown table per workload on
stdout, DIR/results.json with every sample, and PNG plots in DIR.

The command sets up and tears down everything itself: a sparse backing file
under --scratch attached as a loop device with direct I/O, mkfs.xfs -m
reflink=1 mounted on a temporary directory, and a reflinkfs image mounted by
this binary (mount -d). It needs root, /dev/fuse, xfsprogs (mkfs.xfs, xfs_io),
losetup and fincore (util-linux), and says what is missing (exit 2).

Workloads (--only): clone (clone time vs size), extents (clone and delete vs
extent count), memory (bytes held after reading N clones), read (cached and
uncached sequential reads, of an unshared file and of a clone, the clone also
with share=off), mapped (page cache of N processes mapping a library from N
clones: reflinkfs, share=off, XFS, overlayfs), firstopen (the first open of a
never-opened clone, which makes its passthrough backing, vs later opens), cow
(random overwrites of a shared vs unshared file), tree (many small files cloned as a tree), metadata (create/stat/unlink),
library (the engine through its Go API, internal/enginebench).

Every figure is the median of --runs runs (default 5, --quick 3). A full run
takes about 15 minutes on 2 vCPUs; --quick a few minutes. Progress goes to stderr.`,
		Example: `  reflinkfs bench --quick
  reflinkfs bench --out /tmp/bench --only clone,memory --runs 3
  reflinkfs bench --only read,mapped,firstopen   # the passthrough measurements
  reflinkfs bench --perf > report.md     # also profile the daemon during reads`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := bench.ParseOnly(only)
			if err != nil {
				return usagef("--only: %v", err)
			}
			if cmd.Flags().Changed("runs") && runs < 1 {
				return usagef("--runs %d: want at least 1", runs)
			}
			if engineDir != "" {
				return runEnginebench(cmd, engineDir, quick, runs)
			}
			bench.AddSbinToPath()
			if err := bench.CheckPrereqs(bench.HostSystem()); err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			cfg := bench.DefaultConfig(quick)
			if cmd.Flags().Changed("runs") {
				cfg.Runs = runs
			}
			cfg.Only = ids
			cfg.OutDir = out
			cfg.ScratchDir = scratch
			cfg.Perf = perf
			cfg.CommandLine = append([]string{"reflinkfs"}, os.Args[1:]...)
			cfg.Stdout = cmd.OutOrStdout()
			cfg.Stderr = cmd.ErrOrStderr()
			if cfg.Exe, err = os.Executable(); err != nil {
				return fmt.Errorf("cannot find this program to mount reflinkfs: %w", err)
			}
			// The first SIGINT/SIGTERM/SIGHUP cancels the run, which then
			// tears down; later ones are absorbed so teardown completes.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			return bench.Run(ctx, cfg)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&quick, "quick", false, "smaller sizes and 3 runs: a run of a few minutes")
	fl.StringVar(&out, "out", "bench-out", "directory for results.json and the PNG plots")
	fl.IntVar(&runs, "runs", 0, "runs per figure, the median is reported (default 5, --quick 3)")
	fl.StringVar(&only, "only", "", "comma-separated workloads to run (default all): clone,extents,memory,read,mapped,firstopen,cow,tree,metadata,library")
	fl.StringVar(&scratch, "scratch", "/var/tmp", "directory for the XFS backing file and the reflinkfs image (sparse; removed afterwards)")
	fl.BoolVar(&perf, "perf", false, "record the reflinkfs daemon with perf(1) during cached and uncached reads")
	fl.StringVar(&engineDir, bench.LibraryFlag, "", "internal: run only the library tables (internal/enginebench) in this directory")
	fl.MarkHidden(bench.LibraryFlag)
	return cmd
}

// runEnginebench prints internal/enginebench's tables; the bench harness
// runs it in a child process (its library workload).
func runEnginebench(cmd *cobra.Command, dir string, quick bool, runs int) error {
	cfg := enginebench.Full(dir, cmd.OutOrStdout())
	if quick {
		cfg = enginebench.Quick(dir, cmd.OutOrStdout())
	}
	if runs > 0 {
		cfg.Runs = runs
	}
	return enginebench.Run(cfg)
}
