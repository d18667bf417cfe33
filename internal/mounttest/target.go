package mounttest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/fusefs"
	mt "github.com/reflinkfs/reflinkfs/internal/modeltest"
	"github.com/reflinkfs/reflinkfs/ioctl"
)

// Options configure a MountTarget. Zero values choose the defaults.
type Options struct {
	// Engine configures the image. Defaults as modeltest.LibOptions: a
	// 64 MiB device, a 256 KiB cache (constant eviction and write-back), no
	// background commits (runs are reproducible; Sync and Reopen commit) and
	// a discarding logger.
	Engine reflinkfs.Options
	// Logger receives the adapter's warnings; default: discard.
	Logger *slog.Logger
	// Debug logs every FUSE request (fusefs.Options.Debug).
	Debug bool
	// Mmap performs the mmap path's reads and writes; without it those
	// operations use pread/pwrite (counted in IOCounts.MmapFallbacks).
	Mmap *MmapHelper
	// Share is the mount's passthrough policy (fusefs.Options.Share).
	Share fusefs.ShareMode
	// CopyShare turns copy detection on (it is off here, unlike a real
	// mount's default): the oracle's space model counts every written
	// block, and this process reads and writes the same patterns at the
	// same offsets, which copy detection would rightly share.
	CopyShare bool
}

func (o Options) engineOptions() reflinkfs.Options {
	e := o.Engine
	if e.Size == 0 {
		e.Size = 64 << 20
	}
	if e.CacheSize == 0 {
		e.CacheSize = 256 << 10
	}
	if e.CommitInterval == 0 {
		e.CommitInterval = -1
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	return e
}

// releaseTimeout bounds the wait for the kernel's asynchronous FUSE_RELEASE
// to reach the engine after the last close of an unlinked file.
const releaseTimeout = 10 * time.Second

// handles are the descriptors kept open for one file name.
type handles struct {
	rw     *os.File // O_RDWR
	direct *os.File // O_RDWR|O_DIRECT, opened on first use
}

func (h *handles) close() error {
	var errs []error
	for _, f := range []*os.File{h.rw, h.direct} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	h.rw, h.direct = nil, nil
	return errors.Join(errs...)
}

// detachedFile is an unlinked file kept open in a Detacher slot.
type detachedFile struct {
	h   *handles
	ino uint64
}

// MountTarget is a modeltest.Target on a FUSE mount of a fresh reflinkfs
// image. It implements Detacher, SpaceReporter and io.Closer. It is not
// safe for concurrent use (neither is the runner).
type MountTarget struct {
	image, mountpoint string
	removeDirs        []string // Close removes these (the factory made them)
	eopt              reflinkfs.Options
	mopt              fusefs.Options
	mmap              *MmapHelper

	fsys *reflinkfs.FS
	srv  *fusefs.Server

	open     map[string]*handles
	detached [mt.NumSlots]*detachedFile

	counts IOCounts
}

// IOCounts counts the data operations by the path they took through the
// kernel.
type IOCounts struct {
	PlainWrites, DirectWrites, MmapWrites int
	PlainReads, DirectReads, MmapReads    int
	// MmapFallbacks counts ops chosen for mmap that used pwrite/pread
	// because a mapping cannot do them (extending or empty writes,
	// negative offsets) or there is no MmapHelper.
	MmapFallbacks int
	// FreshReads are reads through a new read-only descriptor;
	// PassthroughReads those of them the mount passed through.
	FreshReads, PassthroughReads int
}

// New creates a reflinkfs image in imageDir (empty or missing) and mounts it
// at mountpoint (an existing empty directory).
func New(imageDir, mountpoint string, opt Options) (*MountTarget, error) {
	logger := opt.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &MountTarget{
		image: imageDir, mountpoint: mountpoint,
		eopt: opt.engineOptions(),
		mmap: opt.Mmap,
		mopt: fusefs.Options{FsName: imageDir, DefaultPermissions: true, Debug: opt.Debug, Logger: logger, Share: opt.Share, NoCopyShare: !opt.CopyShare},
		open: map[string]*handles{},
	}
	fsys, err := reflinkfs.Create(imageDir, t.eopt)
	if err != nil {
		return nil, fmt.Errorf("reflinkfs.Create: %w", err)
	}
	t.fsys = fsys
	if err := t.mount(); err != nil {
		fsys.Close()
		t.fsys = nil
		return nil, err
	}
	return t, nil
}

// Factory returns a modeltest.Factory making each MountTarget with a new
// image and mount point under baseDir; closing the target unmounts and
// removes both.
func Factory(baseDir string, opt Options) mt.Factory {
	return func() (mt.Target, error) {
		image, err := os.MkdirTemp(baseDir, "image-")
		if err != nil {
			return nil, err
		}
		mnt, err := os.MkdirTemp(baseDir, "mnt-")
		if err != nil {
			os.RemoveAll(image)
			return nil, err
		}
		t, err := New(image, mnt, opt)
		if err != nil {
			os.RemoveAll(image)
			os.Remove(mnt)
			return nil, err
		}
		t.removeDirs = []string{image, mnt}
		return t, nil
	}
}

func (t *MountTarget) mount() error {
	srv, err := fusefs.Mount(t.fsys, t.mountpoint, t.mopt)
	if err != nil {
		return err
	}
	t.srv = srv
	return nil
}

// FS is the mounted filesystem.
func (t *MountTarget) FS() *reflinkfs.FS { return t.fsys }

// Mountpoint is where the filesystem is mounted.
func (t *MountTarget) Mountpoint() string { return t.mountpoint }

// IOCounts reports how the data operations so far went through the kernel.
func (t *MountTarget) IOCounts() IOCounts { return t.counts }

var errNotMounted = errors.New("mounttest: filesystem not mounted (a Reopen failed)")

func (t *MountTarget) path(name string) string { return filepath.Join(t.mountpoint, name) }

// handle returns the descriptors of name, opening (and with create,
// creating) the file on first use.
func (t *MountTarget) handle(name string, create bool) (*handles, error) {
	if t.srv == nil {
		return nil, errNotMounted
	}
	if h := t.open[name]; h != nil {
		return h, nil
	}
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(t.path(name), flag, 0o644)
	if err != nil {
		return nil, err
	}
	h := &handles{rw: f}
	t.open[name] = h
	return h, nil
}

// directFile returns h's O_DIRECT descriptor, opening path on first use.
func directFile(h *handles, path string) (*os.File, error) {
	if h.direct == nil {
		f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
		if err != nil {
			return nil, err
		}
		h.direct = f
	}
	return h.direct, nil
}

func (t *MountTarget) handles2(src, dst string) (*handles, *handles, error) {
	s, err := t.handle(src, false)
	if err != nil {
		return nil, nil, err
	}
	d, err := t.handle(dst, false)
	return s, d, err
}

// withFd runs fn with f's descriptor number, keeping f alive meanwhile.
func withFd(f *os.File, fn func(fd int) error) error {
	err := fn(int(f.Fd()))
	runtime.KeepAlive(f)
	return err
}

func (t *MountTarget) WriteAt(name string, off int64, data []byte) error {
	h, err := t.handle(name, true)
	if err != nil {
		return err
	}
	switch choosePath(name, off, len(data)) {
	case pathDirect:
		f, err := directFile(h, t.path(name))
		if err != nil {
			return err
		}
		t.counts.DirectWrites++
		return pwriteAll(f, data, off)
	case pathMmap:
		size, err := fileSize(h.rw)
		if err != nil {
			return err
		}
		if t.mmap != nil && off >= 0 && len(data) > 0 && off+int64(len(data)) <= size {
			t.counts.MmapWrites++
			return t.mmap.Write(h.rw, off, data)
		}
		t.counts.MmapFallbacks++
	}
	t.counts.PlainWrites++
	return pwriteAll(h.rw, data, off)
}

func (t *MountTarget) ReadAt(name string, off int64, n int) ([]byte, error) {
	if choosePath(name, off, n) == pathFresh {
		return t.freshRead(name, off, n)
	}
	h, err := t.handle(name, false)
	if err != nil {
		return nil, err
	}
	return t.read(h, name, t.path(name), off, n)
}

// freshRead closes name's descriptors (the next operation opens them
// again) and reads through a new read-only one, closed after the read.
func (t *MountTarget) freshRead(name string, off int64, n int) ([]byte, error) {
	if t.srv == nil {
		return nil, errNotMounted
	}
	if h := t.open[name]; h != nil {
		delete(t.open, name)
		if err := h.close(); err != nil {
			return nil, err
		}
	}
	before := t.srv.Passthrough().Opens
	f, err := os.Open(t.path(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t.counts.FreshReads++
	if t.srv.Passthrough().Opens != before {
		t.counts.PassthroughReads++
	}
	return preadFull(f, off, n)
}

// read reads through h by the path choosePath(key, ...) picks; path names
// the file for opening the O_DIRECT descriptor.
func (t *MountTarget) read(h *handles, key, path string, off int64, n int) ([]byte, error) {
	switch choosePath(key, off, n) {
	case pathDirect:
		f, err := directFile(h, path)
		if err != nil {
			return nil, err
		}
		t.counts.DirectReads++
		return preadFull(f, off, n)
	case pathMmap:
		if t.mmap != nil && off >= 0 {
			t.counts.MmapReads++
			return t.mmap.Read(h.rw, off, n)
		}
		t.counts.MmapFallbacks++
	}
	t.counts.PlainReads++
	return preadFull(h.rw, off, n)
}

func (t *MountTarget) Size(name string) (int64, error) {
	if t.srv == nil {
		return 0, errNotMounted
	}
	var st unix.Stat_t
	if err := unix.Stat(t.path(name), &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: name, Err: err}
	}
	return st.Size, nil
}

func (t *MountTarget) Truncate(name string, size int64) error {
	h, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return withFd(h.rw, func(fd int) error { return unix.Ftruncate(fd, size) })
}

func (t *MountTarget) fallocate(name string, mode uint32, off, n int64) error {
	h, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return withFd(h.rw, func(fd int) error { return unix.Fallocate(fd, mode, off, n) })
}

func (t *MountTarget) PunchHole(name string, off, n int64) error {
	return t.fallocate(name, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

func (t *MountTarget) ZeroRange(name string, off, n int64) error {
	return t.fallocate(name, unix.FALLOC_FL_ZERO_RANGE, off, n)
}

func (t *MountTarget) Allocate(name string, off, n int64, keepSize bool) error {
	var mode uint32
	if keepSize {
		mode = unix.FALLOC_FL_KEEP_SIZE
	}
	return t.fallocate(name, mode, off, n)
}

func (t *MountTarget) CloneRange(src, dst string, srcOff, n, dstOff int64) error {
	s, d, err := t.handles2(src, dst)
	if err != nil {
		return err
	}
	return ioctl.CloneRange(d.rw, s.rw, srcOff, n, dstOff)
}

func (t *MountTarget) DedupeRange(src, dst string, srcOff, n, dstOff int64) (int64, error) {
	s, d, err := t.handles2(src, dst)
	if err != nil {
		return 0, err
	}
	deduped, differ, err := ioctl.DedupeRange(d.rw, dstOff, s.rw, srcOff, n)
	switch {
	case err != nil:
		return 0, err
	case differ:
		return 0, reflinkfs.ErrRangesDiffer
	}
	return deduped, nil
}

// maxCopyCall is the most one copy_file_range call copies through FUSE: the
// reply's count is 32 bits, and the kernel and the adapter cap the length
// there, in whole pages.
const maxCopyCall = (1<<32 - 1) &^ (mt.B - 1)

// CopyRange copies with copy_file_range. A copy longer than one call can do
// is split at source block boundaries and issued last piece first (see the
// package doc).
func (t *MountTarget) CopyRange(src, dst string, srcOff, n, dstOff int64) (int64, error) {
	s, d, err := t.handles2(src, dst)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, syscall.EINVAL // copy_file_range's length is a size_t
	}
	if src == dst && !Expressible(mt.Copy(0, 0, srcOff, n, dstOff)) {
		return 0, ErrInexpressible
	}
	srcSize, err := fileSize(s.rw)
	if err != nil {
		return 0, err
	}
	total := n // what the copy will do: clamped to the source EOF
	if srcOff >= 0 {
		total = min(n, max(srcSize-srcOff, 0))
	}
	if srcOff < 0 || dstOff < 0 || total <= maxCopyCall {
		return copyCalls(s.rw, d.rw, srcOff, n, dstOff, total)
	}
	var pieces [][2]int64
	for pos := int64(0); pos < total; {
		end := min(total, (srcOff+pos+maxCopyCall)/mt.B*mt.B-srcOff)
		pieces = append(pieces, [2]int64{pos, end})
		pos = end
	}
	for i := len(pieces) - 1; i >= 0; i-- {
		p := pieces[i]
		if _, err := copyCalls(s.rw, d.rw, srcOff+p[0], p[1]-p[0], dstOff+p[0], p[1]-p[0]); err != nil {
			return 0, fmt.Errorf("copy_file_range of bytes [%d,%d) of %d: %w", p[0], p[1], total, err)
		}
	}
	return total, nil
}

// copyCalls calls copy_file_range once for n bytes, then again while fewer
// than limit bytes are copied (limit is n clamped to the source size before
// the copy, so a same-file copy that extends the file does not go on to
// copy its own output).
func copyCalls(s, d *os.File, srcOff, n, dstOff, limit int64) (int64, error) {
	var done int64
	for first := true; first || done < limit; first = false {
		ask := limit - done
		if first {
			ask = n // the kernel's own clamping and checks apply
		}
		roff, woff := srcOff+done, dstOff+done
		var c int
		err := withFd(s, func(sfd int) error {
			return withFd(d, func(dfd int) error {
				var err error
				c, err = unix.CopyFileRange(sfd, &roff, dfd, &woff, int(min(ask, 1<<62)), 0)
				return err
			})
		})
		if first && errors.Is(err, syscall.EOVERFLOW) && (srcOff < 0 || dstOff < 0) {
			// The kernel adds the length to the offsets as unsigned
			// numbers before it looks at their signs: a negative offset
			// with a length is EOVERFLOW there, EINVAL in the engine.
			err = syscall.EINVAL
		}
		if err != nil {
			if done > 0 {
				return done, fmt.Errorf("copy_file_range after %d of %d bytes: %w", done, limit, err)
			}
			return 0, err
		}
		if c == 0 {
			break
		}
		done += int64(c)
	}
	return done, nil
}

func (t *MountTarget) Unshare(name string, off, n int64) error {
	h, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return ioctl.Unshare(h.rw, off, n)
}

func (t *MountTarget) Sync(name string) error {
	h, err := t.handle(name, false)
	if err != nil {
		return err
	}
	return h.rw.Sync()
}

// closeAll closes every descriptor, named and detached, without waiting
// for the releases (an unmount follows).
func (t *MountTarget) closeAll() error {
	var errs []error
	for name, h := range t.open {
		if err := h.close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", name, err))
		}
		delete(t.open, name)
	}
	for s, d := range t.detached {
		if d != nil {
			errs = append(errs, d.h.close())
			t.detached[s] = nil
		}
	}
	return errors.Join(errs...)
}

// unmountAndClose unmounts and closes the filesystem.
func (t *MountTarget) unmountAndClose() error {
	err := t.closeAll()
	if t.srv != nil {
		if uerr := t.srv.Unmount(); uerr != nil {
			err = errors.Join(err, uerr)
			// Do not leave a dead mount behind.
			_ = unix.Unmount(t.mountpoint, unix.MNT_DETACH)
			t.srv.Wait()
		}
		t.srv = nil
	}
	if t.fsys != nil {
		if cerr := t.fsys.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("FS.Close: %w", cerr))
		}
		t.fsys = nil
	}
	return err
}

// Reopen unmounts, closes the image, opens it again and mounts it again.
func (t *MountTarget) Reopen() error {
	if t.srv == nil {
		return errNotMounted
	}
	if err := t.unmountAndClose(); err != nil {
		return err
	}
	fsys, err := reflinkfs.Open(t.image, t.eopt)
	if err != nil {
		return fmt.Errorf("reflinkfs.Open: %w", err)
	}
	t.fsys = fsys
	if err := t.mount(); err != nil {
		t.fsys.Close()
		t.fsys = nil
		return err
	}
	return nil
}

// inoOf returns the inode number of name (lstat).
func (t *MountTarget) inoOf(name string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(t.path(name), &st); err != nil {
		return 0, &os.PathError{Op: "lstat", Path: name, Err: err}
	}
	return st.Ino, nil
}

// waitReleased waits until the engine has freed inode ino (unlinked, all
// its descriptors closed): FUSE_RELEASE reaches the daemon asynchronously.
func (t *MountTarget) waitReleased(ino uint64) error {
	deadline := time.Now().Add(releaseTimeout)
	pause := 20 * time.Microsecond
	for {
		_, err := t.fsys.GetAttr(ino)
		switch {
		case errors.Is(err, syscall.ENOENT):
			return nil
		case err != nil:
			return fmt.Errorf("mounttest: GetAttr(%d) while waiting for its release: %w", ino, err)
		case time.Now().After(deadline):
			return fmt.Errorf("mounttest: inode %d still exists %v after its last close (FUSE_RELEASE lost?)", ino, releaseTimeout)
		}
		time.Sleep(pause)
		pause = min(2*pause, 5*time.Millisecond)
	}
}

// closeName closes the descriptors of name (if any).
func (t *MountTarget) closeName(name string) error {
	h := t.open[name]
	if h == nil {
		return nil
	}
	delete(t.open, name)
	return h.close()
}

// Remove unlinks name, closes its descriptors and waits until the engine has
// released the file.
func (t *MountTarget) Remove(name string) error {
	if t.srv == nil {
		return errNotMounted
	}
	ino, err := t.inoOf(name)
	if err != nil {
		return err
	}
	if err := unix.Unlink(t.path(name)); err != nil {
		return &os.PathError{Op: "unlink", Path: name, Err: err}
	}
	if err := t.closeName(name); err != nil {
		return err
	}
	return t.waitReleased(ino)
}

// Rename renames old over new; new's descriptors are closed afterwards (and
// its release awaited), old's follow the file to its new name.
func (t *MountTarget) Rename(old, new string) error {
	if t.srv == nil {
		return errNotMounted
	}
	var victim uint64
	if old != new {
		if ino, err := t.inoOf(new); err == nil {
			victim = ino
		}
	}
	if err := unix.Rename(t.path(old), t.path(new)); err != nil {
		return &os.LinkError{Op: "rename", Old: old, New: new, Err: err}
	}
	if old == new {
		return nil
	}
	err := t.closeName(new)
	if h := t.open[old]; h != nil {
		t.open[new] = h
		delete(t.open, old)
	}
	if err == nil && victim != 0 {
		err = t.waitReleased(victim)
	}
	return err
}

func (t *MountTarget) Fiemap(name string) ([]reflinkfs.Extent, error) {
	h, err := t.handle(name, false)
	if err != nil {
		return nil, err
	}
	exts, err := ioctl.Fiemap(h.rw)
	if err != nil {
		return nil, err
	}
	out := make([]reflinkfs.Extent, len(exts))
	for i, e := range exts {
		out[i] = reflinkfs.Extent{Logical: e.Logical, Physical: e.Physical, Length: e.Length, Shared: e.Shared, Unwritten: e.Unwritten}
	}
	return out, nil
}

func (t *MountTarget) UsedBytes() (int64, error) {
	if t.fsys == nil {
		return 0, errNotMounted
	}
	return t.fsys.Stats().UsedBytes, nil
}

// SpaceStats implements modeltest.SpaceReporter.
func (t *MountTarget) SpaceStats() (mt.SpaceStats, error) {
	if t.fsys == nil {
		return mt.SpaceStats{}, errNotMounted
	}
	st := t.fsys.Stats()
	return mt.SpaceStats{LogicalBytes: st.LogicalBytes, SharedBytes: st.SharedBytes, ChecksumErrors: st.ChecksumErrors}, nil
}

// Check runs fsck (no repair) on the mounted filesystem.
func (t *MountTarget) Check() error {
	if t.fsys == nil {
		return errNotMounted
	}
	rep, err := t.fsys.Fsck(false)
	if err != nil {
		return fmt.Errorf("Fsck: %w", err)
	}
	if !rep.Clean() {
		return fmt.Errorf("fsck found %d problems:\n\t%s", len(rep.Problems), strings.Join(rep.Problems, "\n\t"))
	}
	return nil
}

// Detach implements modeltest.Detacher: unlinks name, keeping its
// descriptors in slot.
func (t *MountTarget) Detach(name string, slot int) error {
	h, err := t.handle(name, false)
	if err != nil {
		return err
	}
	if err := t.CloseDetached(slot); err != nil {
		return err
	}
	ino, err := t.inoOf(name)
	if err != nil {
		return err
	}
	if err := unix.Unlink(t.path(name)); err != nil {
		return &os.PathError{Op: "unlink", Path: name, Err: err}
	}
	delete(t.open, name)
	t.detached[slot] = &detachedFile{h: h, ino: ino}
	return nil
}

func (t *MountTarget) ReadDetached(slot int, off int64, n int) ([]byte, error) {
	d := t.detached[slot]
	if d == nil {
		return nil, syscall.EBADF
	}
	// An unlinked file can still be opened (for O_DIRECT) through /proc.
	proc := "/proc/self/fd/" + strconv.Itoa(int(d.h.rw.Fd()))
	return t.read(d.h, "d"+strconv.Itoa(slot), proc, off, n)
}

func (t *MountTarget) SizeDetached(slot int) (int64, error) {
	d := t.detached[slot]
	if d == nil {
		return 0, syscall.EBADF
	}
	return fileSize(d.h.rw)
}

// CloseDetached closes slot's descriptor and waits until the engine has
// released the file.
func (t *MountTarget) CloseDetached(slot int) error {
	d := t.detached[slot]
	if d == nil {
		return nil
	}
	t.detached[slot] = nil
	if err := d.h.close(); err != nil {
		return err
	}
	return t.waitReleased(d.ino)
}

// Close closes every descriptor, unmounts, closes the image and removes
// the directories the factory made.
func (t *MountTarget) Close() error {
	err := t.unmountAndClose()
	for _, d := range t.removeDirs {
		err = errors.Join(err, os.RemoveAll(d))
	}
	t.removeDirs = nil
	return err
}

var _ interface {
	mt.Target
	mt.Detacher
	mt.SpaceReporter
	io.Closer
} = (*MountTarget)(nil)

// ErrInexpressible is returned by CopyRange for a copy that is not
// Expressible, rather than doing something else than the oracle expects.
var ErrInexpressible = errors.New("mounttest: this copy cannot be issued through FUSE with the oracle's semantics (see Expressible); leave it out with Mountable")

// Expressible reports whether op can be issued through the mount with
// exactly the oracle's semantics. The one shape that cannot: a copy within
// one file, longer than one copy_file_range call can do (maxCopyCall),
// with equal, non-zero offsets within a block and the destination after
// the source. Such a copy must be several calls, and when its destination
// starts inside the source's last block, beyond the source's end of file,
// no order of calls gives the oracle's single copy: issued in order, the
// piece holding the tail no longer ends at the (grown) end of file, so its
// partial last block is written instead of shared; issued last piece first,
// the tail shares that block before the head's write into it, which then
// copies it. The test cannot see sizes here, so it excludes the whole shape.
func Expressible(op mt.Op) bool {
	return !(op.Kind == mt.KCopy && op.F == op.Dst && op.N > maxCopyCall &&
		op.Off >= 0 && op.DstOff > op.Off && op.Off%mt.B != 0 && op.Off%mt.B == op.DstOff%mt.B)
}

// Mountable returns the longest prefix of ops whose operations are all
// Expressible: like an operation the oracle does not model, an
// inexpressible one ends the sequence.
func Mountable(ops []mt.Op) []mt.Op {
	for i, op := range ops {
		if !Expressible(op) {
			return ops[:i]
		}
	}
	return ops
}
