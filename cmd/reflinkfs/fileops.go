package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"

	"github.com/reflinkfs/reflinkfs/ioctl"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// dedupeChunk is the length of one dedupe request: a bounded amount of work
// per call, as btrfs and XFS also cap FIDEDUPERANGE at 16 MiB.
const dedupeChunk = 16 << 20

// cloneFD makes dst share all of src's blocks: reflinkfs's own ioctl, or the
// kernel's FICLONE when the files are not on a reflinkfs mount (XFS, btrfs).
func cloneFD(dst, src *os.File) error {
	err := ioctl.Clone(dst, src)
	if errors.Is(err, unix.ENOTTY) {
		if ferr := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); ferr != nil {
			return explainIoctlError(&os.PathError{Op: "clone", Path: dst.Name(), Err: ferr})
		}
		return nil
	}
	return explainIoctlError(err)
}

// dedupeRange is ioctl.DedupeRange with the kernel's FIDEDUPERANGE as the
// fallback off reflinkfs.
func dedupeRange(dst *os.File, dstOff int64, src *os.File, srcOff, length int64) (int64, bool, error) {
	n, differ, err := ioctl.DedupeRange(dst, dstOff, src, srcOff, length)
	if !errors.Is(err, unix.ENOTTY) {
		return n, differ, explainIoctlError(err)
	}
	req := unix.FileDedupeRange{
		Src_offset: uint64(srcOff), Src_length: uint64(length),
		Info: []unix.FileDedupeRangeInfo{{Dest_fd: int64(dst.Fd()), Dest_offset: uint64(dstOff)}},
	}
	if err := unix.IoctlFileDedupeRange(int(src.Fd()), &req); err != nil {
		return 0, false, explainIoctlError(&os.PathError{Op: "dedupe", Path: dst.Name(), Err: err})
	}
	info := req.Info[0]
	if info.Status < 0 {
		return 0, false, explainIoctlError(&os.PathError{Op: "dedupe", Path: dst.Name(), Err: syscall.Errno(-info.Status)})
	}
	return int64(info.Bytes_deduped), info.Status == unix.FILE_DEDUPE_RANGE_DIFFERS, nil
}

// explainIoctlError turns the errnos of an unsupported operation into a
// sentence; others pass unchanged.
func explainIoctlError(err error) error {
	var pe *os.PathError
	if err == nil || !errors.As(err, &pe) {
		return err
	}
	switch {
	case errors.Is(err, unix.ENOTTY):
		return fmt.Errorf("%s: not a file on a reflinkfs mount (this operation needs one)", pe.Path)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("%s: the file system does not support this operation (%v)", pe.Path, pe.Err)
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%s: source and destination are on different file systems (reflinks work within one mount)", pe.Path)
	case errors.Is(err, unix.EBADF):
		return fmt.Errorf("%s: not open for writing, or the source is not open for reading (%v)", pe.Path, pe.Err)
	}
	return fmt.Errorf("%s: %w", pe.Path, pe.Err)
}

func newCloneCommand() *cobra.Command {
	var recursive bool
	cmd := &cobra.Command{
		Use:   "clone [-r] SRC DST",
		Short: "Clone a file (or with -r a directory tree) sharing all data blocks",
		Long: `Make DST a clone of SRC: DST shares SRC's data blocks until either is written,
so cloning costs no data copy and no extra space, whatever the file size.
Writing to either file later copies only the blocks written.

DST is created with SRC's mode; if DST is an existing directory the clone is
made inside it as DST/$(basename SRC). An existing DST file is replaced.

With -r, SRC is a directory tree: directories, regular files (cloned),
symbolic links, special files and hard links (as hard links) are recreated
with their modes, ownership (when run as root), extended attributes and
access/modification times. Times are set after contents, directories last.
When SRC and DST's parent are on one reflinkfs mount the daemon clones the
whole tree in one request (the CLONE_TREE ioctl); elsewhere, or with an
older daemon, the tree is walked and cloned file by file.

SRC and DST must be on the same reflinkfs mount (or on one XFS or btrfs file
system, through FICLONE).`,
		Example: `  reflinkfs clone /mnt/reflinkfs/vm.img /mnt/reflinkfs/vm-clone.img
  reflinkfs clone -r /mnt/reflinkfs/rootfs /mnt/reflinkfs/rootfs-2`,
		Args: exactArgs("SRC", "DST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := args[0], args[1]
			if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
				dst = filepath.Join(dst, filepath.Base(filepath.Clean(src)))
			}
			fi, err := os.Lstat(src)
			if err != nil {
				return fmt.Errorf("%s: %w", src, unwrapPathError(err))
			}
			if fi.IsDir() {
				if !recursive {
					return usagef("%s is a directory (use -r to clone a tree)", src)
				}
				return cloneTreeAuto(src, dst, cloneFD, os.Stderr)
			}
			return cloneOneFile(src, dst)
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "clone a directory tree")
	return cmd
}

// cloneOneFile clones the regular file src to dst, giving dst src's mode.
func cloneOneFile(src, dst string) error {
	sf, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("%s: %w", src, unwrapPathError(err))
	}
	defer sf.Close()
	fi, err := sf.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", src)
	}
	if dfi, err := os.Stat(dst); err == nil && os.SameFile(fi, dfi) {
		return fmt.Errorf("%s and %s are the same file", src, dst)
	}
	_, statErr := os.Lstat(dst)
	created := errors.Is(statErr, os.ErrNotExist)
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return fmt.Errorf("%s: %w", dst, unwrapPathError(err))
	}
	err = cloneFD(df, sf)
	if err == nil && created {
		err = df.Chmod(cloneMode(fi, df))
	}
	if cerr := df.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%s: %w", dst, unwrapPathError(cerr))
	}
	if err != nil && created {
		os.Remove(dst)
	}
	return err
}

// cloneMode is the mode a new clone dst of src gets: src's, set-ID and
// sticky bits included, except that a copy whose owner or group is not
// src's (a user cloning someone else's file) loses those bits, as with
// cp -p.
func cloneMode(src os.FileInfo, dst *os.File) os.FileMode {
	mode := src.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
	s, ok := src.Sys().(*syscall.Stat_t)
	var d syscall.Stat_t
	if !ok || syscall.Fstat(int(dst.Fd()), &d) != nil || d.Uid != s.Uid || d.Gid != s.Gid {
		mode &^= os.ModeSetuid | os.ModeSetgid | os.ModeSticky
	}
	return mode
}

func newDedupeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "dedupe FILE1 FILE2...",
		Short: "Share identical data of FILE2... with FILE1",
		Long: `Compare each of FILE2... with FILE1 at the same offsets, in 16 MiB chunks, and
make the chunks whose bytes are identical share FILE1's blocks. Chunks that
differ are reported and left alone; that is not an error. Prints the bytes
deduplicated per file.

The files must be on one reflinkfs mount (or one XFS or btrfs file system,
through FIDEDUPERANGE) and FILE2... writable.`,
		Example: `  reflinkfs dedupe /mnt/reflinkfs/base.img /mnt/reflinkfs/copy1.img /mnt/reflinkfs/copy2.img`,
		Args:    minArgs(2, "FILE2 (at least two files)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return dedupeFiles(os.Stdout, args[0], args[1:])
		},
	}
}

// span is a byte range [Off, Off+Len).
type span struct{ Off, Len int64 }

// dedupeResult is what deduplicating one file against the source did.
type dedupeResult struct {
	Compared, Deduped int64
	Differs           []span // merged, in offset order
	NotDeduped        []span // compared equal but refused (e.g. a partial tail block)
}

func dedupeFiles(w io.Writer, first string, others []string) error {
	src, err := os.Open(first)
	if err != nil {
		return fmt.Errorf("%s: %w", first, unwrapPathError(err))
	}
	defer src.Close()
	sfi, err := src.Stat()
	if err != nil {
		return err
	}
	if !sfi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", first)
	}
	var errs []error
	for _, name := range others {
		if err := dedupeOne(w, src, sfi, name); err != nil {
			errs = append(errs, err)
			fmt.Fprintf(os.Stderr, "reflinkfs: %v\n", err)
		}
	}
	if len(errs) > 0 {
		return &exitError{code: exitFailure}
	}
	return nil
}

func dedupeOne(w io.Writer, src *os.File, sfi os.FileInfo, name string) error {
	dst, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%s: %w", name, unwrapPathError(err))
	}
	defer dst.Close()
	dfi, err := dst.Stat()
	if err != nil {
		return err
	}
	if !dfi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", name)
	}
	if os.SameFile(sfi, dfi) {
		fmt.Fprintf(w, "%s: same file as %s, skipped\n", name, src.Name())
		return nil
	}
	res, err := dedupeFile(dst, src, min(sfi.Size(), dfi.Size()), dedupeRange)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: %d bytes deduplicated (%s) of %d compared\n", name, res.Deduped, formatBytes(res.Deduped), res.Compared)
	for _, s := range res.Differs {
		fmt.Fprintf(w, "  differs: offset %d length %d\n", s.Off, s.Len)
	}
	for _, s := range res.NotDeduped {
		fmt.Fprintf(w, "  not deduplicated (partial block): offset %d length %d\n", s.Off, s.Len)
	}
	if sfi.Size() != dfi.Size() {
		fmt.Fprintf(w, "  sizes differ (%d and %d bytes): only the first %d bytes were compared\n", sfi.Size(), dfi.Size(), res.Compared)
	}
	return nil
}

type dedupeFunc func(dst *os.File, dstOff int64, src *os.File, srcOff, length int64) (int64, bool, error)

// dedupeFile deduplicates [0, size) of dst against src at equal offsets in
// dedupeChunk pieces.
func dedupeFile(dst, src *os.File, size int64, dedupe dedupeFunc) (dedupeResult, error) {
	res := dedupeResult{Compared: size}
	addSpan := func(list *[]span, off, n int64) {
		if l := len(*list); l > 0 && (*list)[l-1].Off+(*list)[l-1].Len == off {
			(*list)[l-1].Len += n
			return
		}
		*list = append(*list, span{off, n})
	}
	for off := int64(0); off < size; {
		length := min(dedupeChunk, size-off)
		n, differ, err := dedupe(dst, off, src, off, length)
		if errors.Is(err, unix.EINVAL) && length%4096 != 0 {
			// A partial last block may only be shared when it ends both files;
			// share the whole blocks and report the rest.
			whole := length &^ 4095
			if whole == 0 {
				addSpan(&res.NotDeduped, off, length)
				off += length
				continue
			}
			n, differ, err = dedupe(dst, off, src, off, whole)
			if err == nil && !differ && n == whole {
				res.Deduped += n
				addSpan(&res.NotDeduped, off+whole, length-whole)
				off += length
				continue
			}
			length = whole
		}
		switch {
		case err != nil:
			return res, err
		case differ:
			addSpan(&res.Differs, off, length)
			off += length
		case n <= 0:
			return res, fmt.Errorf("%s: dedupe made no progress at offset %d", dst.Name(), off)
		default:
			res.Deduped += n
			off += n
		}
	}
	return res, nil
}

func newFiemapCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "fiemap FILE",
		Short: "Print a file's extent map, showing which extents are shared",
		Long: `Print the extent map of FILE on a reflinkfs mount: for each extent its offset
in the file (LOGICAL), on the data device (PHYSICAL), its LENGTH in bytes,
whether its blocks are shared with another file or clone (SHARED), and flags
(unwritten: preallocated, reads as zeros). Holes are not listed.`,
		Example: `  reflinkfs fiemap /mnt/reflinkfs/vm-clone.img`,
		Args:    exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], unwrapPathError(err))
			}
			defer f.Close()
			if fi, err := f.Stat(); err != nil {
				return fmt.Errorf("%s: %w", args[0], unwrapPathError(err))
			} else if !fi.Mode().IsRegular() {
				return fmt.Errorf("%s: is %s; fiemap maps the data of a regular file", args[0], fileKind(fi.Mode()))
			}
			exts, err := ioctl.Fiemap(f)
			if err != nil {
				return explainIoctlError(err)
			}
			printFiemap(os.Stdout, exts)
			return nil
		},
	}
}

func printFiemap(w io.Writer, exts []ioctl.Extent) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "LOGICAL\tPHYSICAL\tLENGTH\tSHARED\tFLAGS\t")
	var mapped, shared int64
	for _, e := range exts {
		sh, flags := "no", "-"
		if e.Shared {
			sh = "shared"
			shared += e.Length
		}
		if e.Unwritten {
			flags = "unwritten"
		}
		mapped += e.Length
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t\n", e.Logical, e.Physical, e.Length, sh, flags)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d extents, %d bytes mapped (%s), %d bytes shared (%s)\n",
		len(exts), mapped, formatBytes(mapped), shared, formatBytes(shared))
}

func newUnshareCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unshare FILE",
		Short: "Give a file private copies of all blocks it shares",
		Long: `Copy every block FILE shares with other files (clones, dedupe) into blocks of
its own, so later writes to it allocate nothing and the other files are
unaffected. The contents do not change. Needs as much free space as FILE's
shared bytes.`,
		Example: `  reflinkfs unshare /mnt/reflinkfs/vm-clone.img`,
		Args:    exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.OpenFile(args[0], os.O_RDWR, 0)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], unwrapPathError(err))
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("%s: not a regular file", args[0])
			}
			if err := ioctl.Unshare(f, 0, fi.Size()); err != nil {
				return explainIoctlError(err)
			}
			return nil
		},
	}
}

// fileKind names a file type for messages: "a directory", "a symlink", ...
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a fifo"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return "a special file"
}
