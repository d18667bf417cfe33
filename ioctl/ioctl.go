// Package ioctl defines the custom ioctls that a reflinkfs mount serves on its
// regular files and directories, and client functions that call them.
//
// The Linux kernel never passes FICLONE, FICLONERANGE, FIDEDUPERANGE or
// FS_IOC_FIEMAP to a FUSE daemon, but it does pass ioctls whose number encodes
// direction and size (_IOW/_IOWR) on regular files and directories, in
// "restricted mode": the kernel copies a fixed-size argument in and out, so
// the argument structures here are inline, fixed size, contain no pointers,
// and have no implicit padding. All integers are in the machine's native
// byte order.
//
// A source is named by a file descriptor number in the argument; the daemon
// duplicates the caller's descriptor with pidfd_open + pidfd_getfd, checks it
// belongs to the same mount and is open for reading. A file ioctl is issued
// on the destination file, which must be open for writing; the tree clone is
// issued on the directory that receives the new tree.
//
// The layouts, numbers and errors are documented for C callers in
// docs/ioctl.md. This package has no dependency on the reflinkfs engine.
package ioctl

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"syscall"
)

// Magic is the ioctl type byte of every reflinkfs ioctl.
const Magic = 'R'

// Direction bits and field shifts of an ioctl number (asm-generic/ioctl.h,
// used by x86, arm64, riscv and most other architectures).
const (
	iocWrite = 1 // userspace writes, the kernel reads the argument in
	iocRead  = 2 // the kernel writes the argument back out

	iocNrShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
	iocSizeMask  = 1<<14 - 1
)

func ioc(dir, typ, nr, size uint32) uint32 {
	return dir<<iocDirShift | size<<iocSizeShift | typ<<iocTypeShift | nr<<iocNrShift
}

// IOW returns the number of an ioctl that passes size bytes in (_IOW).
func IOW(typ, nr, size uint32) uint32 { return ioc(iocWrite, typ, nr, size) }

// IOWR returns the number of an ioctl that passes size bytes in and out (_IOWR).
func IOWR(typ, nr, size uint32) uint32 { return ioc(iocWrite|iocRead, typ, nr, size) }

// SizeOf returns the argument size encoded in an ioctl number.
func SizeOf(cmd uint32) uint32 { return cmd >> iocSizeShift & iocSizeMask }

// CloneArgs is the argument of IocClone: the destination (the file the ioctl
// is issued on) is truncated to zero and becomes a clone of the whole source
// file, sharing all its blocks.
type CloneArgs struct {
	SrcFd int64 // descriptor of the source file in the calling process
}

// CloneRangeArgs is the argument of IocCloneRange, with FICLONERANGE
// semantics: Length bytes of the source at SrcOffset are shared into the
// destination at DstOffset. Length 0 means "to the end of the source".
// Offsets and length must be multiples of the block size (4096), except that
// the range may end at the source's end of file.
type CloneRangeArgs struct {
	SrcFd     int64
	SrcOffset uint64
	Length    uint64
	DstOffset uint64
}

// DedupeRangeArgs is the argument of IocDedupeRange, with FIDEDUPERANGE
// semantics for one destination: if the two ranges hold identical bytes, the
// destination range is made to share the source's blocks. BytesDeduped and
// Status are written back.
type DedupeRangeArgs struct {
	SrcFd        int64
	SrcOffset    uint64
	Length       uint64
	DstOffset    uint64
	BytesDeduped uint64 // out
	Status       int32  // out: DedupeSame or DedupeDiffers
	Reserved     uint32
}

// Dedupe outcomes in DedupeRangeArgs.Status.
const (
	DedupeSame    = 0
	DedupeDiffers = 1
)

// UnshareArgs is the argument of IocUnshare: blocks of the file in the range
// that are shared with other files get private copies (like fallocate
// FALLOC_FL_UNSHARE_RANGE, which FUSE does not forward).
type UnshareArgs struct {
	Offset uint64
	Length uint64
}

// FiemapBatch is the number of extents one IocFiemap call can return.
const FiemapBatch = 32

// FiemapExtent is one extent in FiemapArgs.
type FiemapExtent struct {
	Logical  uint64 // byte offset in the file
	Physical uint64 // byte offset on the data device
	Length   uint64 // bytes
	Flags    uint32 // ExtentShared, ExtentUnwritten
	Reserved uint32
}

// FiemapExtent.Flags bits.
const (
	ExtentShared    = 1 << 0
	ExtentUnwritten = 1 << 1
)

// FiemapArgs is the argument of IocFiemap. The caller sets Start; the daemon
// fills Extents[:Count] with the mapped extents that end after Start, in
// logical order, sets Next to the logical offset to pass as Start in the next
// call, and sets FiemapLast in Flags when no extents follow.
type FiemapArgs struct {
	Start    uint64 // in
	Next     uint64 // out
	Count    uint32 // out
	Flags    uint32 // out: FiemapLast
	Reserved uint64
	Extents  [FiemapBatch]FiemapExtent
}

// FiemapArgs.Flags bits.
const FiemapLast = 1 << 0

// CloneTreeNameSize is the size of CloneTreeArgs.Name: a name of up to 255
// bytes and its terminating NUL.
const CloneTreeNameSize = 256

// CloneTreeArgs is the argument of IocCloneTree, issued on a directory: the
// directory SrcFd (on the same mount) is cloned, with everything below it,
// as the new entry Name of the directory the ioctl is issued on.
type CloneTreeArgs struct {
	SrcFd int64
	Name  [CloneTreeNameSize]byte // NUL-terminated
}

// SetName stores name NUL-terminated in a.Name. It fails for names that
// cannot be a directory entry: empty, ".", "..", containing '/' or NUL
// (EINVAL), or longer than 255 bytes (ENAMETOOLONG).
func (a *CloneTreeArgs) SetName(name string) error {
	if err := checkEntryName(name); err != nil {
		return err
	}
	a.Name = [CloneTreeNameSize]byte{}
	copy(a.Name[:], name)
	return nil
}

// EntryName returns the name stored in a.Name, checked as SetName checks it
// (a Name without a NUL is ENAMETOOLONG).
func (a *CloneTreeArgs) EntryName() (string, error) {
	n := bytes.IndexByte(a.Name[:], 0)
	if n < 0 {
		return "", syscall.ENAMETOOLONG
	}
	name := string(a.Name[:n])
	return name, checkEntryName(name)
}

func checkEntryName(name string) error {
	switch {
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	case len(name) >= CloneTreeNameSize:
		return syscall.ENAMETOOLONG
	}
	return nil
}

// Argument sizes in bytes (the size field of each ioctl number).
const (
	SizeCloneArgs       = 8
	SizeCloneRangeArgs  = 32
	SizeDedupeRangeArgs = 48
	SizeUnshareArgs     = 16
	SizeFiemapArgs      = 32 + FiemapBatch*32
	SizeCloneTreeArgs   = 8 + CloneTreeNameSize
)

// Request numbers. Numbers start at 0x40 to stay clear of linux/random.h,
// which also uses type 'R' (on character devices only).
var (
	IocClone       = IOW(Magic, 0x40, SizeCloneArgs)
	IocCloneRange  = IOW(Magic, 0x41, SizeCloneRangeArgs)
	IocDedupeRange = IOWR(Magic, 0x42, SizeDedupeRangeArgs)
	IocUnshare     = IOW(Magic, 0x43, SizeUnshareArgs)
	IocFiemap      = IOWR(Magic, 0x44, SizeFiemapArgs)
	// IocCloneTree is issued on a directory, not a regular file.
	IocCloneTree = IOW(Magic, 0x45, SizeCloneTreeArgs)
)

// Encode returns the wire form of an argument structure (one of the *Args
// types of this package).
func Encode(args any) []byte {
	b, err := binary.Append(nil, binary.NativeEndian, args)
	if err != nil {
		panic(fmt.Sprintf("ioctl: encode %T: %v", args, err))
	}
	return b
}

// Decode fills args (a pointer to one of the *Args types) from its wire form.
// It fails if b is shorter than the structure.
func Decode(b []byte, args any) error {
	if _, err := binary.Decode(b, binary.NativeEndian, args); err != nil {
		return fmt.Errorf("ioctl: decode %T from %d bytes: %w", args, len(b), err)
	}
	return nil
}
