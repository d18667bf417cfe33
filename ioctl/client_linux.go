package ioctl

import (
	"errors"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Extent is one mapping of a file, as returned by Fiemap.
type Extent struct {
	Logical, Physical, Length int64
	Shared, Unwritten         bool
}

func call(f *os.File, req uint32, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(arg))
	runtime.KeepAlive(f)
	if errno != 0 {
		return &os.PathError{Op: "ioctl", Path: f.Name(), Err: errno}
	}
	return nil
}

// CloneRange shares length bytes of src at srcOff into dst at dstOff.
// Length 0 clones to the end of src. dst must be open for writing, src for
// reading, and both must be files of the same reflinkfs mount.
func CloneRange(dst *os.File, src *os.File, srcOff, length, dstOff int64) error {
	if srcOff < 0 || length < 0 || dstOff < 0 {
		return &os.PathError{Op: "ioctl", Path: dst.Name(), Err: unix.EINVAL}
	}
	args := CloneRangeArgs{SrcFd: int64(src.Fd()), SrcOffset: uint64(srcOff), Length: uint64(length), DstOffset: uint64(dstOff)}
	err := call(dst, IocCloneRange, unsafe.Pointer(&args))
	runtime.KeepAlive(src)
	return refreshed(dst, err)
}

// refreshed re-reads dst's attributes after a successful change: the daemon
// invalidated the kernel's copy, but direct I/O and mmap use the cached size
// without asking again, so fetch it now.
func refreshed(dst *os.File, err error) error {
	if err != nil {
		return err
	}
	var st unix.Stat_t
	_ = unix.Fstat(int(dst.Fd()), &st)
	runtime.KeepAlive(dst)
	return nil
}

// Clone makes dst a copy of the whole of src sharing all its blocks: dst is
// truncated to zero and src is cloned into it up to its end of file.
func Clone(dst, src *os.File) error {
	args := CloneArgs{SrcFd: int64(src.Fd())}
	err := call(dst, IocClone, unsafe.Pointer(&args))
	runtime.KeepAlive(src)
	return refreshed(dst, err)
}

// DedupeRange makes length bytes of dst at dstOff share src's blocks at srcOff
// if both ranges hold identical bytes. It reports the bytes deduplicated, and
// differ=true (with no change) if the contents differ.
func DedupeRange(dst *os.File, dstOff int64, src *os.File, srcOff, length int64) (deduped int64, differ bool, err error) {
	if srcOff < 0 || length < 0 || dstOff < 0 {
		return 0, false, &os.PathError{Op: "ioctl", Path: dst.Name(), Err: unix.EINVAL}
	}
	args := DedupeRangeArgs{SrcFd: int64(src.Fd()), SrcOffset: uint64(srcOff), Length: uint64(length), DstOffset: uint64(dstOff)}
	err = call(dst, IocDedupeRange, unsafe.Pointer(&args))
	runtime.KeepAlive(src)
	if err := refreshed(dst, err); err != nil {
		return 0, false, err
	}
	return int64(args.BytesDeduped), args.Status == DedupeDiffers, nil
}

// Unshare gives f private copies of any blocks in [off, off+length) that it
// shares with other files.
func Unshare(f *os.File, off, length int64) error {
	if off < 0 || length < 0 {
		return &os.PathError{Op: "ioctl", Path: f.Name(), Err: unix.EINVAL}
	}
	args := UnshareArgs{Offset: uint64(off), Length: uint64(length)}
	return call(f, IocUnshare, unsafe.Pointer(&args))
}

// Fiemap returns the extent map of f, in logical order. It issues one ioctl
// per FiemapBatch extents.
func Fiemap(f *os.File) ([]Extent, error) {
	var out []Extent
	var args FiemapArgs
	for {
		start := args.Next
		args = FiemapArgs{Start: start}
		if err := call(f, IocFiemap, unsafe.Pointer(&args)); err != nil {
			return nil, err
		}
		if args.Count > FiemapBatch {
			return nil, &os.PathError{Op: "ioctl", Path: f.Name(), Err: errors.New("fiemap: daemon returned too many extents")}
		}
		for _, e := range args.Extents[:args.Count] {
			out = append(out, Extent{
				Logical: int64(e.Logical), Physical: int64(e.Physical), Length: int64(e.Length),
				Shared: e.Flags&ExtentShared != 0, Unwritten: e.Flags&ExtentUnwritten != 0,
			})
		}
		if args.Flags&FiemapLast != 0 || args.Count == 0 {
			return out, nil
		}
		if args.Next <= start {
			return nil, &os.PathError{Op: "ioctl", Path: f.Name(), Err: errors.New("fiemap: daemon did not advance")}
		}
	}
}

// CloneTree makes dstDir/name a clone of the directory tree srcDir: every
// directory, file (sharing all its blocks), symlink, special file, hard link,
// extended attribute, mode, owner and access/modification time below srcDir
// is reproduced in one request to the daemon. Both must be directories of
// the same reflinkfs mount, srcDir open for reading (not O_PATH), and name
// must not exist in dstDir. On an error other than the checks made before
// anything is created, a partial copy may be left at dstDir/name. Callers
// without privileges get a copy they own; see docs/ioctl.md.
func CloneTree(dstDir *os.File, name string, srcDir *os.File) error {
	var args CloneTreeArgs
	if err := args.SetName(name); err != nil {
		return &os.PathError{Op: "ioctl", Path: dstDir.Name(), Err: err}
	}
	args.SrcFd = int64(srcDir.Fd())
	err := call(dstDir, IocCloneTree, unsafe.Pointer(&args))
	runtime.KeepAlive(srcDir)
	return err
}
