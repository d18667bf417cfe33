// Package mounttest runs the model-based random tester (internal/modeltest)
// through a real FUSE mount: MountTarget is a modeltest.Target whose every
// operation is a system call on files of a mounted reflinkfs, so requests pass
// through the Linux kernel, the go-fuse adapter (internal/fusefs) and the
// engine, and the oracle's exact semantics (bytes, sizes, block sharing,
// unwritten extents, used and shared bytes, fsck) are demanded of that whole
// stack.
//
// # How each operation reaches the kernel
//
//   - WriteAt / ReadAt: pwrite / pread on a plain O_RDWR descriptor, on an
//     O_RDWR|O_DIRECT descriptor, or through a MAP_SHARED mapping of the
//     range (writes: msync(MS_SYNC), then munmap). The path is a hash of
//     (file, offset, length), so a sequence and every shrunk variant of it
//     take the same paths on every run. A mapping can neither extend a file
//     nor be made at a negative offset, so an empty or extending write and a
//     read at a negative offset chosen for mmap use pwrite / pread instead
//     (IOCounts.MmapFallbacks).
//   - The mmap path runs in a helper process (MmapHelper), which takes the
//     target's descriptor with pidfd_getfd. In the process serving the mount
//     a page fault on the mount can deadlock: the faulting thread waits for
//     our own FUSE server, yet is neither in Go code nor in a system call,
//     so a garbage collection that starts meanwhile stops the server's
//     goroutines and waits for that thread for ever (seen on the first run).
//   - Size: stat(2) of the path (the kernel's cached attributes).
//   - Truncate: ftruncate; PunchHole: fallocate(PUNCH_HOLE|KEEP_SIZE);
//     ZeroRange: fallocate(ZERO_RANGE); Allocate: fallocate(0 or KEEP_SIZE).
//   - CloneRange, DedupeRange, Unshare, Fiemap: package ioctl (the custom
//     ioctls; the kernel forwards neither FICLONERANGE nor its friends to
//     FUSE).
//   - CopyRange: copy_file_range(2), again while a call copies less.
//   - Sync: fsync. Remove: unlink, then close the descriptors. Rename:
//     rename(2), then close the victim's descriptors.
//   - Reopen: close every descriptor, unmount (Server.Unmount), FS.Close,
//     reflinkfs.Open and mount again at the same mount point.
//   - Detacher: Detach unlinks the file and keeps its descriptors;
//     ReadDetached reads by any of the three paths (the O_DIRECT descriptor
//     of an unlinked file is opened through /proc/self/fd), SizeDetached is
//     fstat.
//   - UsedBytes, SpaceStats and Check ask the *reflinkfs.FS the target
//     mounted (Stats, Fsck): the mount has no interface for them.
//
// Descriptors are opened on first use of a name and kept until the file is
// removed, renamed over, detached or the filesystem reopened, as the library
// target keeps its handles.
//
// # Differences from the library target, and how they are accounted for
//
// The oracle is the one the library target is held to; nothing in its
// comparison of results, contents, sizes, sharing, unwritten flags or space
// is relaxed. These are the places where the kernel stands between the test
// and the engine:
//
//   - FUSE_RELEASE is asynchronous: close(2) returns before the daemon has
//     closed its handle, so an unlinked file's blocks are freed a little
//     after the last close. Where the oracle frees blocks (Remove, Rename
//     over an existing file, CloseDetached, Detach into a used slot) the
//     target waits, at most releaseTimeout, until the engine no longer knows
//     the inode (FS.GetAttr answers ENOENT), and fails the operation if that
//     never happens.
//   - copy_file_range takes its length as a size_t: a negative length cannot
//     be passed, so CopyRange answers EINVAL without a system call (as the
//     ioctl client functions do for clone, dedupe and unshare).
//   - copy_file_range with a negative offset and a non-zero length: the VFS
//     adds the length to the offsets as unsigned numbers before it checks
//     their signs and answers EOVERFLOW; the engine (and a zero length in the
//     kernel) say EINVAL. CopyRange turns that EOVERFLOW into EINVAL.
//   - One copy_file_range call through FUSE copies at most 4 GiB - 4 KiB
//     (maxCopyCall: the reply carries a 32-bit count; go-fuse answers the
//     64-bit request with ENOSYS and the kernel falls back). A longer copy is
//     several engine operations. Issued in order, the piece holding the tail
//     of a same-file copy that extends the file no longer ends at the source's
//     (grown) end of file, so its partial last block is written instead of
//     shared; and a call boundary at an unaligned source offset writes the
//     block there instead of sharing it. So CopyRange splits a long copy at
//     source block boundaries itself and issues the pieces last first: the
//     tail then sees the end of file and the destination size the whole copy
//     would, and the pieces compose to exactly the oracle's single copy.
//   - One shape composes to the oracle's copy in no order: a same-file copy
//     longer than one call whose destination starts inside the source's
//     last, partial block (beyond the end of file) with a non-empty head (see
//     Expressible). Mountable cuts a generated sequence before the first op
//     of that shape (as the oracle ends a sequence at an unmodelled op), and
//     CopyRange refuses it with ErrInexpressible. About 2.5% of generated
//     sequences lose their tail this way, 1.3% of all ops.
//   - ENOENT for operations on a missing file comes from open(2) (or
//     stat/unlink/rename) rather than from the engine; the errno is the same.
//
// The kernel's other argument checks (fallocate: offset < 0 or length <= 0
// is EINVAL; copy_file_range: clamped to the source EOF, nothing to copy is
// 0, overlapping ranges in one file are EINVAL; pwrite/pread/ftruncate at a
// negative offset or size are EINVAL; file size limits far above anything
// generated) agree with the engine's, so no operation kind is left out.
//
// # Running
//
// TestModelMount (flags -model.seqs, -model.ops, -model.duration,
// -model.seed, -model.without, as the library tester; default 45 s) needs
// root and /dev/fuse; it skips without them unless REFLINKFS_REQUIRE_FUSE=1.
// A failing sequence is run again through modeltest.LibTarget: if the
// library fails too it is an engine bug (shrunk through the library),
// otherwise a FUSE adapter or kernel difference (shrunk through fresh
// mounts). A binary using the mmap path must call ServeMmapHelperIfAsked
// first thing in main (TestMain in tests).
package mounttest
