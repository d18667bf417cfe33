package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// target is one file system under test, with the operations whose
// mechanism differs between XFS and reflinkfs.
type target struct {
	key  string // fsXFS or fsReflinkfs (JSON)
	name string // for tables and progress lines
	root string // mount point
	env  *Env
}

func (t *target) isReflinkfs() bool { return t.key == fsReflinkfs }

// dir is the workload's directory on this file system.
func (t *target) dir(workload string) string { return filepath.Join(t.root, workload) }

// cloneFile makes dst (new) a clone of src the way cp does it: FICLONE on
// XFS; on reflinkfs, where the kernel never forwards FICLONE, a
// copy_file_range loop (the daemon reflinks block-aligned ranges). call is
// the time of the clone syscalls alone; whole adds opening src, creating
// dst and closing both (what an in-process cp pays, without the exec).
func (t *target) cloneFile(src, dst string) (call, whole time.Duration, err error) {
	start := time.Now()
	sf, err := os.Open(src)
	if err != nil {
		return 0, 0, err
	}
	defer sf.Close()
	df, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, 0, err
	}
	defer df.Close()
	c0 := time.Now()
	if t.isReflinkfs() {
		err = copyFileRangeAll(sf, df)
	} else {
		err = unix.IoctlFileClone(int(df.Fd()), int(sf.Fd()))
	}
	call = time.Since(c0)
	if err != nil {
		return 0, 0, fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	if err := df.Close(); err != nil {
		return 0, 0, err
	}
	if err := sf.Close(); err != nil {
		return 0, 0, err
	}
	return call, time.Since(start), nil
}

// copyFileRangeAll copies all of src to dst with copy_file_range, looping
// like cp: one call reports at most (4 GiB - 1 block) on FUSE.
func copyFileRangeAll(src, dst *os.File) error {
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	var offIn, offOut int64
	for remaining := fi.Size(); remaining > 0; {
		n, err := unix.CopyFileRange(int(src.Fd()), &offIn, int(dst.Fd()), &offOut, int(min(remaining, 1<<62)), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("copy_file_range: unexpected end of file with %d bytes left", remaining)
		}
		remaining -= int64(n)
	}
	return nil
}

// syncFS makes everything on the file system durable. XFS: syncfs, which
// also runs XFS's deferred inode inactivation (the freeing of a deleted
// file's extents). reflinkfs: fsync of the root directory, which commits
// the engine (syncfs never reaches a FUSE daemon).
func (t *target) syncFS() error {
	d, err := os.Open(t.root)
	if err != nil {
		return err
	}
	defer d.Close()
	if t.isReflinkfs() {
		return d.Sync()
	}
	return unix.Syncfs(int(d.Fd()))
}

// settle finishes the work deletions leave behind and makes it durable.
// XFS frees a deleted inode's extents later, in background inode
// inactivation (inodegc), which neither syncfs nor statfs waits for; a
// synchronous XFS_IOC_FREE_EOFBLOCKS scan does (it flushes inodegc), so it
// runs first. reflinkfs releases extents within unlink itself.
func (t *target) settle() error {
	if !t.isReflinkfs() {
		if err := xfsFlushInodegc(t.root); err != nil {
			return err
		}
	}
	return t.syncFS()
}

// xfsEOFBlocks is struct xfs_fs_eofblocks (xfs_fs.h).
type xfsEOFBlocks struct {
	Version, Flags   uint32
	UID, GID, ProjID uint32
	_                uint32
	MinFileSize      uint64
	_                [12]uint64
}

const (
	xfsEOFBlocksVersion = 1
	xfsEOFFlagsSync     = 1
	// xfsIocFreeEOFBlocks is _IOR('X', 58, struct xfs_fs_eofblocks).
	xfsIocFreeEOFBlocks = 2<<30 | uint32(unsafe.Sizeof(xfsEOFBlocks{}))<<16 | 'X'<<8 | 58
)

// xfsFlushInodegc runs a synchronous EOF-blocks scan on the XFS mounted at
// root, which waits for all queued inode inactivation to finish.
func xfsFlushInodegc(root string) error {
	d, err := os.Open(root)
	if err != nil {
		return err
	}
	defer d.Close()
	args := xfsEOFBlocks{Version: xfsEOFBlocksVersion, Flags: xfsEOFFlagsSync}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), uintptr(xfsIocFreeEOFBlocks), uintptr(unsafe.Pointer(&args)))
	if errno != 0 {
		return &os.PathError{Op: "ioctl XFS_IOC_FREE_EOFBLOCKS", Path: root, Err: errno}
	}
	return nil
}

// deleteFile unlinks path, waits for the file system to release its
// extents and syncs, so the time includes all the work of the delete.
//
// With waitFreed, total also waits until the file's blocks are free: a
// reflinkfs file of more than 1024 extents is freed in the background after
// unlink returns (as XFS inactivates inodes in the background, which settle
// waits for), and the daemon's statistics say when it is done. Without it,
// no statistics query adds its round trip to small figures.
func (t *target) deleteFile(ctx context.Context, path string, waitFreed bool) (unlink, total time.Duration, err error) {
	start := time.Now()
	if err := os.Remove(path); err != nil {
		return 0, 0, err
	}
	unlink = time.Since(start)
	if waitFreed && t.isReflinkfs() {
		for {
			st, err := t.env.Stats(ctx)
			if err != nil {
				return 0, 0, err
			}
			if st.ReapingFiles == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := t.settle(); err != nil {
		return 0, 0, err
	}
	return unlink, time.Since(start), nil
}

// extentInfo is what a file system's extent map says about a file.
type extentInfo struct {
	Extents     int
	SharedBytes int64 // reflinkfs only (xfs_io's plain fiemap does not say)
}

// extents counts the file's extents: xfs_io fiemap on XFS (the kernel's
// FS_IOC_FIEMAP), `reflinkfs fiemap` on reflinkfs (its own ioctl, as the
// kernel never forwards FIEMAP to FUSE).
func (t *target) extents(ctx context.Context, path string) (extentInfo, error) {
	if t.isReflinkfs() {
		out, err := runCmd(ctx, t.env.cfg.Exe, "fiemap", path)
		if err != nil {
			return extentInfo{}, err
		}
		return parseReflinkfsFiemapInfo(out)
	}
	out, err := runCmd(ctx, "xfs_io", "-r", "-c", "fiemap", path)
	if err != nil {
		return extentInfo{}, err
	}
	return extentInfo{Extents: countXFSIOExtents(out)}, nil
}

var reflinkfsFiemapShared = regexp.MustCompile(`, (\d+) bytes shared`)

// parseReflinkfsFiemapInfo reads the extent count and shared bytes from
// the summary line of `reflinkfs fiemap`.
func parseReflinkfsFiemapInfo(out string) (extentInfo, error) {
	n, err := parseReflinkfsFiemap(out)
	if err != nil {
		return extentInfo{}, err
	}
	info := extentInfo{Extents: n}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if m := reflinkfsFiemapShared.FindStringSubmatch(lines[len(lines)-1]); m != nil {
		info.SharedBytes, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return info, nil
}

// cloneTree clones a directory tree into a new dst with the tool a user
// would run: cp -a --reflink=always on XFS, reflinkfs clone -r on
// reflinkfs (where cp --reflink=always fails: FICLONE never reaches FUSE).
func (t *target) cloneTree(ctx context.Context, src, dst string) (time.Duration, error) {
	start := time.Now()
	var err error
	if t.isReflinkfs() {
		_, err = runCmd(ctx, t.env.cfg.Exe, "clone", "-r", src, dst)
	} else {
		_, err = runCmd(ctx, "cp", "-a", "--reflink=always", src, dst)
	}
	return time.Since(start), err
}

// cold empties the caches that hold this file system's data: the kernel's
// page, dentry and inode caches, and for reflinkfs the daemon's block cache
// (by remounting).
func (t *target) cold(ctx context.Context) error {
	if t.isReflinkfs() {
		unix.Sync()
		if err := t.env.Remount(ctx); err != nil {
			return err
		}
	}
	return DropCaches()
}
