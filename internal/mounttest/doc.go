// Package mounttest runs the model-based random tester (internal/modeltest)
// through a real FUSE mount: MountTarget is a modeltest.Target whose every
// operation is a system call on files of a mounted reflinkfs, so requests pass
// through the Linux kernel, the go-fuse adapter (internal/fusefs) and the
// engine, and the oracle's exact semantics (bytes, sizes, block sharing,
// unwritten extents, used bytes, fsck) are demanded of that whole stack.
//
// # How each operation reaches the kernel
//
//   - WriteAt / ReadAt: pwrite / pread on a plain O_RDWR descriptor, pread /
//     pwrite on an O_RDWR|O_DIRECT descriptor, or copying into / out of a
//     MAP_SHARED mapping of the range (msync(MS_SYNC) before munmap). The
//     path is a hash of (file, offset, length), so a sequence and every
//     shrunk variant of it take the same paths on every run. A mapping can
//     neither extend a file nor touch pages past EOF, so a write chosen for
//     mmap that does not lie inside the file's current size, and a read at a
//     negative offset, use pwrite / pread instead (see IOCounts).
//   - Size: stat(2) of the path (the kernel's cached attributes).
//   - Truncate: ftruncate; PunchHole: fallocate(PUNCH_HOLE|KEEP_SIZE);
//     ZeroRange: fallocate(ZERO_RANGE); Allocate: fallocate(0 or KEEP_SIZE).
//   - CloneRange, DedupeRange, Unshare, Fiemap: package ioctl (the custom
//     ioctls; the kernel does not forward FICLONERANGE and friends to FUSE).
//   - CopyRange: copy_file_range(2), looping while a call copies less.
//   - Sync: fsync. Remove: unlink, then close the descriptors. Rename:
//     rename(2), then close the victim's descriptors.
//   - Reopen: close every descriptor, unmount (Server.Unmount), FS.Close,
//     reflinkfs.Open and mount again at the same mount point.
//   - Detacher: Detach keeps the O_RDWR descriptor of an unlinked file;
//     ReadDetached is pread on it, SizeDetached fstat.
//   - UsedBytes, SpaceStats and Check ask the *reflinkfs.FS the target
//     mounted (Stats, Fsck): the mount has no interface for them.
//
// Descriptors are opened on first use of a name and kept until the file is
// removed, renamed over, detached or the filesystem reopened, as the library
// target keeps its handles.
//
// # Differences from the library target, and how they are accounted for
//
// The oracle is the same one the library target is held to; nothing in its
// comparison of results, contents, sizes, sharing, unwritten flags or used
// bytes is relaxed. These are the places where the kernel stands between
// the test and the engine:
//
//   - FUSE_RELEASE is asynchronous: close(2) returns before the daemon has
//     closed its handle, so an unlinked file's blocks are freed some time
//     after the last close. Where the oracle frees blocks (Remove, Rename
//     over an existing file, CloseDetached, Detach of a new file into a
//     used slot) the target waits, bounded by releaseTimeout, until the
//     engine no longer knows the inode (FS.GetAttr answers ENOENT), and
//     fails the operation if that never happens.
//   - copy_file_range takes its length as size_t: a negative length cannot
//     be passed, so CopyRange answers EINVAL for it without a system call
//     (the ioctl client functions do the same for clone, dedupe and unshare).
//     Negative offsets are passed to the kernel, which answers EINVAL as the
//     engine does.
//   - One copy_file_range call copies at most about 4 GiB (the FUSE reply
//     carries a 32-bit count). The target loops; continuation calls are
//     clamped to the source size the first call saw, as the oracle clamps
//     once, so a same-file copy that extends the file does not copy the
//     bytes it has just written.
//   - ENOENT for operations on a missing file comes from open(2) (or
//     stat/unlink/rename) rather than from the engine; the errno is the same.
//
// The kernel's own argument checks (fallocate: offset < 0 or length <= 0 is
// EINVAL; copy_file_range: clamped to the source EOF, nothing to copy is 0,
// overlapping ranges in one file are EINVAL; pwrite/pread/ftruncate at a
// negative offset or size are EINVAL) agree with the engine's for every
// argument the generator produces, so no operation kind is left out.
//
// # Running
//
// TestModelMount (flags -model.seqs, -model.ops, -model.duration,
// -model.seed, -model.without, as the library tester) needs root and
// /dev/fuse; it skips without them unless REFLINKFS_REQUIRE_FUSE=1. A
// failing sequence is run again through modeltest.LibTarget: if the library
// fails too it is an engine bug (shrunk through the library), otherwise a
// FUSE adapter or kernel difference (shrunk through fresh mounts).
package mounttest
