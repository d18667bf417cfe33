package main

import (
	"os"

	"github.com/reflinkfs/reflinkfs/internal/enginebench"
	"github.com/spf13/cobra"
)

// newBenchCommand runs the benchmarks (for now the library-level ones).
func newBenchCommand() *cobra.Command {
	var quick bool
	var dir string
	cmd := &cobra.Command{
		Use:     "bench",
		Short:   "Measure clone time and cache memory of N clones (library level)",
		Example: "  reflinkfs bench --quick --dir /var/tmp",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := enginebench.Full(dir, cmd.OutOrStdout())
			if quick {
				cfg = enginebench.Quick(dir, cmd.OutOrStdout())
			}
			return enginebench.Run(cfg)
		},
	}
	cmd.Flags().BoolVar(&quick, "quick", false, "small sizes: a run of about a minute")
	cmd.Flags().StringVar(&dir, "dir", os.TempDir(), "scratch directory for benchmark images")
	return cmd
}
