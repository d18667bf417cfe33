package modeltest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/reflinkfs/reflinkfs"
)

// LibOptions configure a LibTarget. Zero values choose the defaults.
type LibOptions struct {
	Size      int64 // data device size; default 64 MiB
	CacheSize int64 // block cache; default 256 KiB, so eviction and write-back happen constantly
	// CommitInterval is passed to reflinkfs; default -1 (no background
	// commits), so runs are reproducible. Sync and Reopen still commit.
	CommitInterval time.Duration
	Logger         *slog.Logger // default: discard (checksum errors are checked through Stats)
}

func (o LibOptions) fsOptions() reflinkfs.Options {
	opt := reflinkfs.Options{Size: o.Size, CacheSize: o.CacheSize, CommitInterval: o.CommitInterval, Logger: o.Logger}
	if opt.Size == 0 {
		opt.Size = 64 << 20
	}
	if opt.CacheSize == 0 {
		opt.CacheSize = 256 << 10
	}
	if opt.CommitInterval == 0 {
		opt.CommitInterval = -1
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	return opt
}

// LibTarget runs the tester through the reflinkfs library API. It keeps one
// *reflinkfs.File open per name (opened on first use, O_RDWR) and implements
// Detacher, SpaceReporter and io.Closer.
type LibTarget struct {
	dir       string
	removeDir bool // Close removes dir (the factory made it)
	opts      reflinkfs.Options
	fs        *reflinkfs.FS
	open      map[string]*reflinkfs.File
	detached  [NumSlots]*reflinkfs.File
}

// NewLibTarget creates a new reflinkfs image in dir (an empty or missing
// directory) and opens it.
func NewLibTarget(dir string, opt LibOptions) (*LibTarget, error) {
	t := &LibTarget{dir: dir, opts: opt.fsOptions(), open: map[string]*reflinkfs.File{}}
	fsys, err := reflinkfs.Create(dir, t.opts)
	if err != nil {
		return nil, fmt.Errorf("reflinkfs.Create: %w", err)
	}
	t.fs = fsys
	return t, nil
}

// LibFactory returns a Factory making each LibTarget in a new directory under
// baseDir; closing the target removes that directory.
func LibFactory(baseDir string, opt LibOptions) Factory {
	return func() (Target, error) {
		dir, err := os.MkdirTemp(baseDir, "model-")
		if err != nil {
			return nil, err
		}
		t, err := NewLibTarget(dir, opt)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		t.removeDir = true
		return t, nil
	}
}

// FS is the open filesystem (for tests that want to look further).
func (t *LibTarget) FS() *reflinkfs.FS { return t.fs }

var errNotOpen = errors.New("modeltest: filesystem not open (a Reopen failed)")

// handle returns the open file for name, opening it (and creating it if asked).
func (t *LibTarget) handle(name string, create bool) (*reflinkfs.File, error) {
	if t.fs == nil {
		return nil, errNotOpen
	}
	if f := t.open[name]; f != nil {
		return f, nil
	}
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := t.fs.OpenFile(name, flag, 0o644)
	if err != nil {
		return nil, err
	}
	t.open[name] = f
	return f, nil
}

func (t *LibTarget) handles(src, dst string) (*reflinkfs.File, *reflinkfs.File, error) {
	s, err := t.handle(src, false)
	if err != nil {
		return nil, nil, err
	}
	d, err := t.handle(dst, false)
	return s, d, err
}

func (t *LibTarget) WriteAt(name string, off int64, data []byte) error {
	f, err := t.handle(name, true)
	if err != nil {
		return err
	}
	n, err := f.WriteAt(data, off)
	if err == nil && n != len(data) {
		err = fmt.Errorf("short write: %d of %d bytes: %w", n, len(data), io.ErrShortWrite)
	}
	return err
}

func readAt(f *reflinkfs.File, off int64, n int) ([]byte, error) {
	if n < 0 {
		return nil, syscall.EINVAL
	}
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, off)
	if err == io.EOF { // short at EOF: the comparison checks the length
		err = nil
	}
	return buf[:got], err
}

func (t *LibTarget) ReadAt(name string, off int64, n int) ([]byte, error) {
	f, err := t.handle(name, false)
	if err != nil {
		return nil, err
	}
	return readAt(f, off, n)
}

func (t *LibTarget) Size(name string) (int64, error) {
	if t.fs == nil {
		return 0, errNotOpen
	}
	fi, err := t.fs.Stat(name)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (t *LibTarget) Truncate(name string, size int64) error {
	f, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return f.Truncate(size)
}

func (t *LibTarget) PunchHole(name string, off, n int64) error {
	f, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return f.PunchHole(off, n)
}

func (t *LibTarget) ZeroRange(name string, off, n int64) error {
	f, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return f.ZeroRange(off, n)
}

func (t *LibTarget) Allocate(name string, off, n int64, keepSize bool) error {
	f, err := t.handle(name, false)
	if err != nil {
		return err
	}
	if keepSize {
		return f.AllocateKeepSize(off, n)
	}
	return f.Allocate(off, n)
}

func (t *LibTarget) CloneRange(src, dst string, srcOff, n, dstOff int64) error {
	s, d, err := t.handles(src, dst)
	if err != nil {
		return err
	}
	return d.CloneRange(s, srcOff, n, dstOff)
}

func (t *LibTarget) DedupeRange(src, dst string, srcOff, n, dstOff int64) (int64, error) {
	s, d, err := t.handles(src, dst)
	if err != nil {
		return 0, err
	}
	return d.DedupeRange(s, srcOff, n, dstOff)
}

func (t *LibTarget) CopyRange(src, dst string, srcOff, n, dstOff int64) (int64, error) {
	s, d, err := t.handles(src, dst)
	if err != nil {
		return 0, err
	}
	return d.CopyRange(s, srcOff, n, dstOff)
}

func (t *LibTarget) Unshare(name string, off, n int64) error {
	f, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return f.UnshareRange(off, n)
}

func (t *LibTarget) Sync(name string) error {
	f, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return f.Sync()
}

// closeAll closes every handle, named and detached.
func (t *LibTarget) closeAll() error {
	var errs []error
	for name, f := range t.open {
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", name, err))
		}
		delete(t.open, name)
	}
	for s := range t.detached {
		errs = append(errs, t.CloseDetached(s))
	}
	return errors.Join(errs...)
}

// Reopen closes every handle and the filesystem, then opens the image again.
func (t *LibTarget) Reopen() error {
	if t.fs == nil {
		return errNotOpen
	}
	err := t.closeAll()
	if cerr := t.fs.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("FS.Close: %w", cerr))
	}
	t.fs = nil
	if err != nil {
		return err
	}
	fsys, err := reflinkfs.Open(t.dir, t.opts)
	if err != nil {
		return fmt.Errorf("reflinkfs.Open: %w", err)
	}
	t.fs = fsys
	return nil
}

// Remove unlinks name while its handle (if any) is still open, then closes
// the handle: the blocks must be released at that close.
func (t *LibTarget) Remove(name string) error {
	if t.fs == nil {
		return errNotOpen
	}
	if err := t.fs.Remove(name); err != nil {
		return err
	}
	if f := t.open[name]; f != nil {
		delete(t.open, name)
		return f.Close()
	}
	return nil
}

// Rename renames old over new; new's handle (if any) is closed afterwards,
// old's handle follows the file to its new name.
func (t *LibTarget) Rename(old, new string) error {
	if t.fs == nil {
		return errNotOpen
	}
	if err := t.fs.Rename(old, new); err != nil || old == new {
		return err
	}
	victim := t.open[new]
	delete(t.open, new)
	if f := t.open[old]; f != nil {
		t.open[new] = f
		delete(t.open, old)
	}
	if victim != nil {
		return victim.Close()
	}
	return nil
}

func (t *LibTarget) Fiemap(name string) ([]reflinkfs.Extent, error) {
	f, err := t.handle(name, false)
	if err != nil {
		return nil, err
	}
	return f.Fiemap()
}

func (t *LibTarget) UsedBytes() (int64, error) {
	if t.fs == nil {
		return 0, errNotOpen
	}
	return t.fs.Stats().UsedBytes, nil
}

// SpaceStats implements SpaceReporter.
func (t *LibTarget) SpaceStats() (SpaceStats, error) {
	if t.fs == nil {
		return SpaceStats{}, errNotOpen
	}
	st := t.fs.Stats()
	return SpaceStats{LogicalBytes: st.LogicalBytes, SharedBytes: st.SharedBytes, ChecksumErrors: st.ChecksumErrors}, nil
}

// Check runs fsck without repair; an unclean report is an error listing the
// problems.
func (t *LibTarget) Check() error {
	if t.fs == nil {
		return errNotOpen
	}
	rep, err := t.fs.Fsck(false)
	if err != nil {
		return fmt.Errorf("Fsck: %w", err)
	}
	if !rep.Clean() {
		return fmt.Errorf("fsck found %d problems:\n\t%s", len(rep.Problems), strings.Join(rep.Problems, "\n\t"))
	}
	return nil
}

// Detach implements Detacher: removes name, keeping its handle in slot.
func (t *LibTarget) Detach(name string, slot int) error {
	f, err := t.handle(name, false)
	if err != nil {
		return err
	}
	if err := t.CloseDetached(slot); err != nil {
		return err
	}
	if err := t.fs.Remove(name); err != nil {
		return err
	}
	delete(t.open, name)
	t.detached[slot] = f
	return nil
}

func (t *LibTarget) ReadDetached(slot int, off int64, n int) ([]byte, error) {
	if t.detached[slot] == nil {
		return nil, syscall.EBADF
	}
	return readAt(t.detached[slot], off, n)
}

func (t *LibTarget) SizeDetached(slot int) (int64, error) {
	if t.detached[slot] == nil {
		return 0, syscall.EBADF
	}
	fi, err := t.detached[slot].Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (t *LibTarget) CloseDetached(slot int) error {
	f := t.detached[slot]
	if f == nil {
		return nil
	}
	t.detached[slot] = nil
	return f.Close()
}

// Close closes every handle and the filesystem (and removes the directory
// when the factory made it).
func (t *LibTarget) Close() error {
	var err error
	if t.fs != nil {
		err = errors.Join(t.closeAll(), t.fs.Close())
		t.fs = nil
	}
	if t.removeDir {
		err = errors.Join(err, os.RemoveAll(t.dir))
	}
	return err
}
