// Command reflinkfs creates, mounts, checks and inspects reflinkfs images, and
// clones, deduplicates and maps files on a reflinkfs mount.
//
// The same binary is the mount(8) helper when invoked as mount.fuse.reflinkfs
// (see `reflinkfs install-helper`). Exit codes: 0 success, 1 error (for fsck:
// errors were repaired), 2 usage error, 4 fsck left errors unrepaired.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes, documented in docs/cli.md.
const (
	exitOK         = 0
	exitFailure    = 1 // also: fsck repaired errors
	exitUsage      = 2
	exitFsckErrors = 4 // fsck: errors left uncorrected (e2fsck convention)
)

// helperName is the name mount(8) runs for `-t fuse.reflinkfs`.
const helperName = "mount.fuse.reflinkfs"

func main() {
	if filepath.Base(os.Args[0]) == helperName {
		os.Exit(runMountHelper(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code.
// Help and cobra's own output go to stdout; run's error line to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "reflinkfs: %v\n", ee.err)
		}
		return ee.code
	}
	if isUsageError(err) {
		fmt.Fprintf(stderr, "reflinkfs: %v\n", err)
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	fmt.Fprintf(stderr, "reflinkfs: %v\n", err)
	return exitFailure
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "reflinkfs",
		Short: "A copy-on-write filesystem with reflinks and a block cache shared between clones",
		Long: `reflinkfs is a copy-on-write filesystem with reflinks. Files that share blocks
(clones made by cp, reflinkfs clone or dedupe) also share one cached copy of
those blocks in the daemon's block cache.

An image is a directory holding the metadata store and a sparse data file.
'reflinkfs mount' serves it through FUSE; the other commands work on files of a
mounted image or on an unmounted image (mkfs, fsck).

Exit status: 0 success, 1 error (fsck: errors repaired), 2 usage error,
4 fsck: errors left uncorrected.`,
		Example: `  reflinkfs mount -d /var/tmp/reflinkfs.img /mnt/reflinkfs
  cp /mnt/reflinkfs/big /mnt/reflinkfs/big.copy     # a reflink: no data copied
  reflinkfs stats /mnt/reflinkfs
  reflinkfs umount /mnt/reflinkfs`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Without a command there is nothing to do: a usage error (exit 2),
		// not help with exit 0, so scripts notice.
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("missing command (mount, umount, mkfs, fsck, stats, clone, ...)")
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.HiddenDefaultCmd = true
	root.AddCommand(
		newMountCommand(),
		newUmountCommand(),
		newMkfsCommand(),
		newFsckCommand(),
		newStatsCommand(),
		newCloneCommand(),
		newDedupeCommand(),
		newFiemapCommand(),
		newUnshareCommand(),
		newInstallHelperCommand(),
		newVersionCommand(),
		newBenchCommand(),
	)
	return root
}

// usageError marks a command line mistake (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func isUsageError(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	// cobra's own message for an unknown subcommand.
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// exitError carries a specific exit code (fsck); err, if set, is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

// exactArgs is cobra.ExactArgs with a message naming the arguments, as a
// usage error.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		if len(args) < len(names) {
			return usagef("missing %s", strings.Join(names[len(args):], " and "))
		}
		if len(names) == 0 {
			return usagef("unexpected argument %q (%s takes none)", args[0], cmd.Name())
		}
		return usagef("unexpected argument %q (want %s)", args[len(names)], strings.Join(names, " "))
	}
}

// minArgs requires at least n arguments, naming what is missing.
func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("missing %s", what)
		}
		return nil
	}
}
