package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/control"
	"github.com/spf13/cobra"
)

func newMkfsCommand() *cobra.Command {
	var size string
	cmd := &cobra.Command{
		Use:   "mkfs --size N IMAGE",
		Short: "Create an empty image",
		Long: `Create a new image in the directory IMAGE, which must not exist or be empty.
The data file is sparse: it takes host space only for blocks written.
'reflinkfs mount' also creates an image on first use.`,
		Example: `  reflinkfs mkfs --size 64G /var/tmp/reflinkfs.img`,
		Args:    exactArgs("IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("size") {
				return usagef("--size is required (e.g. --size 64G)")
			}
			n, err := parseSize(size)
			if err != nil {
				return usagef("--size %q: %v", size, err)
			}
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			fresh, err := freshImage(dir)
			if err != nil {
				return err
			}
			if !fresh {
				return fmt.Errorf("image %s: directory is not empty (refusing to overwrite)", dir)
			}
			fsys, err := createImage(dir, reflinkfs.Options{Size: n})
			if err != nil {
				return err
			}
			if err := fsys.Close(); err != nil {
				return fmt.Errorf("image %s: %w", dir, err)
			}
			fmt.Printf("created %s: %s\n", dir, formatBytes(n))
			return nil
		},
	}
	cmd.Flags().StringVar(&size, "size", "", "data device size (K, M, G, T suffixes, powers of 1024)")
	return cmd
}

func newFsckCommand() *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "fsck [--repair] IMAGE",
		Short: "Check an unmounted image's consistency, optionally repairing it",
		Long: `Check every invariant of an unmounted image: reference counts against extent
maps, free space, the directory tree, link counts. Without --repair the image
is opened read-only and not changed. With --repair what can be fixed safely is
fixed, and the image is checked again.

Exit status (as e2fsck): 0 clean, 1 errors were repaired (or fsck could not
run), 4 errors left uncorrected (including damage fsck cannot repair, such
as a metadata store that cannot be opened; the reason is printed).`,
		Example: `  reflinkfs fsck /var/tmp/reflinkfs.img
  reflinkfs fsck --repair /var/tmp/reflinkfs.img`,
		Args: exactArgs("IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fsck(args[0], repair)
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "fix what can be fixed safely")
	return cmd
}

func fsck(arg string, repair bool) error {
	dir, err := filepath.Abs(arg)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("image %s: %w", dir, unwrapPathError(err))
	} else if !fi.IsDir() {
		return fmt.Errorf("image %s: not a directory", dir)
	}
	fsys, err := reflinkfs.Open(dir, reflinkfs.Options{ReadOnly: !repair, Recovery: true, CommitInterval: -1})
	if errors.Is(err, reflinkfs.ErrUnrepairable) {
		// Damage, not a failure to run: the verdict is "errors left".
		return &exitError{code: exitFsckErrors, err: err}
	}
	if err != nil {
		return err
	}
	return runFsck(os.Stdout, dir, progressChecker{fsys, os.Stderr}, repair)
}

// progressChecker runs fsck with a progress line on w (a terminal's stderr:
// rewritten in place; elsewhere one line per phase).
type progressChecker struct {
	*reflinkfs.FS
	w *os.File
}

func (p progressChecker) Fsck(repair bool) (*reflinkfs.FsckReport, error) {
	tty := isTerminal(p.w)
	last := ""
	r, err := p.Check(reflinkfs.CheckOptions{Repair: repair, Progress: func(phase string, done int64) {
		switch {
		case tty:
			fmt.Fprintf(p.w, "\rchecking %-10s %12d records", phase, done)
		case phase != last:
			fmt.Fprintf(p.w, "checking %s\n", phase)
		}
		last = phase
	}})
	if tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	return r, err
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// checker is the part of *reflinkfs.FS that fsck uses.
type checker interface {
	Fsck(repair bool) (*reflinkfs.FsckReport, error)
	Close() error
}

// runFsck checks (and repairs) the open image, closes it, prints the report
// and returns the e2fsck-style outcome as an *exitError (nil when clean).
func runFsck(w io.Writer, dir string, fsys checker, repair bool) error {
	report, err := fsys.Fsck(repair)
	if err != nil {
		fsys.Close()
		return fmt.Errorf("image %s: fsck: %w", dir, err)
	}
	printFsckReport(w, dir, report)
	// After a repair, check again from scratch to know what is left.
	left := report
	repaired := len(report.Repaired) > 0
	if repair && (repaired || !report.Clean()) {
		if left, err = fsys.Fsck(false); err != nil {
			fsys.Close()
			return fmt.Errorf("image %s: fsck after repair: %w", dir, err)
		}
	}
	if err := fsys.Close(); err != nil {
		return fmt.Errorf("image %s: close: %w", dir, err)
	}
	switch {
	case report.Clean() && !repaired:
		fmt.Fprintf(w, "%s: clean\n", dir)
		return nil
	case left.Clean():
		fmt.Fprintf(w, "%s: %d repairs made; now clean\n", dir, len(report.Repaired))
		return &exitError{code: exitFailure}
	default:
		if repair {
			fmt.Fprintf(w, "%s: %d problems left after repair:\n", dir, len(left.Problems))
			for _, p := range left.Problems {
				fmt.Fprintf(w, "  %s\n", p)
			}
		} else {
			fmt.Fprintf(w, "%s: %d problems\n", dir, len(report.Problems))
		}
		adviseFsck(w, dir, left, repair)
		return &exitError{code: exitFsckErrors}
	}
}

// adviseFsck says what to do about the problems left: --repair only for
// those it can fix.
func adviseFsck(w io.Writer, dir string, r *reflinkfs.FsckReport, repaired bool) {
	if n := len(r.Problems) - len(r.Unrepairable); n > 0 && !repaired {
		fmt.Fprintf(w, "%s: run 'reflinkfs fsck --repair %s' to fix %d of them\n", dir, dir, n)
	}
	if n := len(r.Unrepairable); n > 0 {
		fmt.Fprintf(w, "%s: %d problems are damaged file data, which repair cannot fix (the files read EIO there): restore those files from a backup, or remove them\n", dir, n)
	}
}

func printFsckReport(w io.Writer, dir string, r *reflinkfs.FsckReport) {
	fmt.Fprintf(w, "%s: %d inodes, %d extents checked\n", dir, r.Inodes, r.Extents)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
	for _, p := range r.Repaired {
		fmt.Fprintf(w, "repaired: %s\n", p)
	}
}

// resolveImage finds the image directory behind a mount point (from the
// mount's source, which the daemon sets to the image path) or accepts an
// image directory directly. mp is "" when arg is an image directory.
func resolveImage(arg string) (image, mp string, err error) {
	m, mp, err := lookupMount(arg)
	if err == nil {
		if !isFuseMount(m) || !filepath.IsAbs(m.Source) || !exists(filepath.Join(m.Source, control.SocketName)) {
			return "", mp, fmt.Errorf("%s: not a reflinkfs mount (type %s, source %s has no control socket); if it was mounted with --fsname, give the image directory instead", mp, m.FsType, m.Source)
		}
		return m.Source, mp, nil
	}
	if !errors.Is(err, errNotMounted) {
		return "", "", fmt.Errorf("%s: %w", arg, err)
	}
	abs, _ := filepath.Abs(arg)
	if exists(filepath.Join(abs, control.SocketName)) {
		return abs, "", nil
	}
	if _, err := os.Stat(abs); err != nil {
		return "", "", fmt.Errorf("%s: %w", abs, unwrapPathError(err))
	}
	return "", "", fmt.Errorf("%s: not a mount point (nor a mounted image directory)", abs)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
