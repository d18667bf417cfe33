// Package fusefs serves a reflinkfs.FS through the Linux kernel's FUSE
// protocol (go-fuse's raw API). It is a thin adapter: every filesystem
// semantic lives in the engine; this package translates requests, owns the
// kernel-facing bookkeeping and chooses how the kernel may cache.
//
// # Inodes
//
// A FUSE node id is the engine's inode number (the root is engine RootIno =
// 1 = FUSE_ROOT_ID) and the generation is the engine's. Engine inodes are
// persistent, so the adapter needs no table to resolve node ids; it counts
// kernel lookups per node only to know when the kernel has forgotten a node,
// and drops the small per-node state it keeps (the "has no xattrs" bit)
// then. Losing that state is always safe: missing state means "ask the
// engine". CAP_EXPORT_SUPPORT is negotiated: the kernel resolves file handles
// (open_by_handle_at) by looking up "." in a node (answered from GetAttr) and
// ".." of a directory (answered by the engine's Lookup of "..").
//
// Every open, of a file or a directory, is an open engine File: an inode
// removed while open (unlink, rmdir, rename over it) stays an orphan with
// nlink 0 until its last release, so fstat of it still answers.
//
// # Caching and timeouts
//
// Read-only opens of files that share blocks are passed through (FUSE
// passthrough, passthrough.go, Options.Share) to one backing file per
// content (internal/backing), so clones share the kernel's page cache,
// mapped pages included; a writable open of a file with passthrough opens
// fails with ETXTBSY. Every other open of a regular file is served by the
// daemon:
//
// Regular files are opened with FOPEN_DIRECT_IO (and
// FOPEN_PARALLEL_DIRECT_WRITES), so the kernel page cache holds no file data
// and the engine's block cache, shared between clones, is the only cache.
// MaxWrite and max_read are 1 MiB and st_blksize is 1 MiB, so sequential
// I/O arrives as 1 MiB requests. Close sends no FLUSH: read-only opens get
// FOPEN_NOFLUSH, and the first FLUSH of a writable one is answered ENOSYS,
// after which the kernel stops sending them (it still writes back dirty
// mapped pages at close; we have nothing to do there). Reads are answered from the
// engine's cache frames without a copy (File.ReadView, one writev).
// CAP_DIRECT_IO_ALLOW_MMAP is requested so
// MAP_SHARED mmap works; pages mapped through a direct-I/O open live in the
// kernel page cache of the mapping inode, one copy per file.
//
// Access times are the engine's (its atime policy): the kernel marks FUSE
// inodes S_NOATIME and, after every read, readdir and readlink, drops its
// cached atime, so the next stat asks the daemon.
//
// Entry and attribute timeouts are long (one hour), negative lookups are
// cached too. That is exact because every change to the namespace and to
// attributes reaches the engine through this kernel, which updates or
// invalidates its own copies as it forwards the request (link, unlink,
// rename, setattr, write, fallocate, copy_file_range all invalidate the
// attributes they affect). The only changes the kernel cannot see are those
// made by the custom ioctls (clone, dedupe, unshare): after them the daemon
// invalidates the destination's attributes and page cache with a
// NOTIFY_INVAL_INODE before answering, and the client functions of package
// ioctl fstat the destination so the kernel's cached size is refreshed.
// Short timeouts would cost a GETATTR (and, with POSIX ACLs, a GETXATTR)
// before nearly every operation.
//
// # Custom ioctls
//
// FICLONE, FICLONERANGE, FIDEDUPERANGE and FS_IOC_FIEMAP never reach a FUSE
// daemon; restricted-mode ioctls with a size in their number do. Package
// github.com/reflinkfs/reflinkfs/ioctl defines them (docs/ioctl.md). The
// source file travels as a descriptor number: the daemon fetches the
// caller's descriptor with pidfd_open + pidfd_getfd on the calling thread,
// checks with statx that it lives on this mount (same st_dev), maps its
// inode number (= node id) to the engine inode, and checks its access mode
// with F_GETFL (O_PATH descriptors are refused: they grant no read access).
// copy_file_range arrives as FUSE_COPY_FILE_RANGE and is served
// by File.CopyRange (reflink when aligned), capped below 4 GiB per call
// because the reply carries a 32-bit count.
//
// The standard inode-flag ioctls (chattr, lsattr: FS_IOC_GETFLAGS,
// FS_IOC_SETFLAGS, FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR) reach the daemon
// as FUSE_IOCTL on a private open the kernel makes; fileattr.go serves them
// (immutable and append-only; the engine enforces them).
//
// The tree clone ioctl is issued on a directory (CAP_IOCTL_DIR is
// negotiated): it clones a source directory's whole tree under a new name
// in one request (FS.CloneTreeIno). The kernel checks no permissions for
// ioctls, so the daemon decides for the caller as the kernel would, by the
// effective capabilities of the calling thread (read from /proc with the
// thread pinned by a pidfd, and counted only in the daemon's user
// namespace; caller.go), never by uid 0 alone. The caller needs write and
// search permission on the destination directory and read permission on
// everything copied (unless CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH), and
// gets what cp -a run by it would make: device nodes only with CAP_MKNOD
// (else EPERM), owners kept only with CAP_CHOWN (else its uid, and the
// source's group if it is a member), set-ID bits only where owner and
// group are kept, trusted.* and security.* xattrs only with CAP_SYS_ADMIN
// (copyAs, docs/ioctl.md). Like the other ioctls it changes what the
// kernel has cached, so the daemon then invalidates the cached negative
// entry of the new name and the parent's attributes.
//
// # Permissions and ACLs
//
// With DefaultPermissions the kernel checks permissions (default_permissions)
// and FUSE_POSIX_ACL is negotiated: ACLs are stored as the xattrs
// system.posix_acl_access/default, the kernel enforces them, and this
// package keeps mode and access ACL in step (setxattr of an ACL updates the
// mode; chmod updates the ACL) and applies default ACL inheritance and the
// umask on creation (CAP_DONT_MASK). New inodes take the caller's uid and
// gid, or the directory's gid when it is setgid (new directories then
// inherit the setgid bit).
//
// CAP_HANDLE_KILLPRIV_V2 is negotiated: the daemon, not the kernel, removes
// set-ID bits and file capabilities when a file's contents or owner change,
// with the kernel's rules (killpriv.go, tested against the host file system).
// In return the kernel checks security.capability once per inode instead of
// before every change, so a copy_file_range or write into a known file is
// one request.
//
// # Unnamed files
//
// open(2) with O_TMPFILE arrives as FUSE_TMPFILE and is served by
// FS.TmpfileAt: an open file with no links, recorded as an orphan. linkat(2)
// of it (AT_EMPTY_PATH, or through /proc/self/fd) arrives as an ordinary
// LINK of its node; the kernel refuses it for O_EXCL tmpfiles, and so does
// the engine.
//
// # Limits
//
//   - syncfs(2) never reaches a FUSE daemon (the kernel forwards FUSE_SYNCFS
//     only for virtiofs, and go-fuse has no handler for it). fsync of a file
//     makes that file durable; fsync of any directory (FSYNCDIR) commits
//     everything (FS.Sync); so does Server.Unmount.
//   - Pages mapped through a direct-I/O open (writable opens, files that
//     share nothing, share=off) live in the kernel page cache of the mapped
//     inode, one copy per file; passthrough opens share one per content.
//   - FICLONE fails with EOPNOTSUPP, so `cp --reflink=always` fails; plain
//     cp (reflink=auto) falls back to copy_file_range, which reflinks.
//
// # Errors
//
// Engine errors unwrap to syscall.Errno and are passed on; ENOSYS from an
// engine method is answered as EOPNOTSUPP, because the kernel takes ENOSYS
// as "never send this request again" for the whole mount.
package fusefs
