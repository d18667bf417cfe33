// Package reflinkfs is a copy-on-write filesystem with reflinks whose block
// cache is shared between files that share blocks.
//
// An image is a directory holding a metadata store (pebble) and a sparse data
// file. Files map logical blocks to physical blocks through extent maps;
// physical extents carry reference counts, so cloning a file only copies
// extent records and bumps counts. The block cache is keyed by physical block:
// N clones read in full hold one cached copy.
//
// # Layers
//
//	FS, File (this package)   filesystem semantics: inodes, directories, extents, CoW
//	internal/meta             on-disk record encoding (CRC32C-checked) and key layout
//	internal/alloc            free-space index and allocator with a free quarantine
//	internal/cache            physical-block cache: fixed arena, shards, pins, eviction
//	internal/device           the data device (O_DIRECT file, memory, fault injection)
//	internal/kv               small ordered transactional key-value interface (pebble)
//
// # Transactions
//
// All metadata changes go into one running transaction (an indexed pebble
// batch). A commit writes back dirty data blocks, flushes the device, and
// only then commits the batch with sync, so durable metadata never references
// data that is not durable. Data is never overwritten in place once durable
// metadata references it: a write to such a block allocates a new one (copy on
// write relative to the last commit), and freed blocks are quarantined until
// the transaction that freed them is durable. See docs/crash-protocol.md.
//
// # Two API levels
//
// The path API (OpenFile, Mkdir, Remove, Rename, Stat, Clone) is shaped like
// package os. The inode API (Lookup, GetAttr, CreateAt, CloneTreeIno, ...)
// takes inode numbers and is what the FUSE frontend uses; the path API is
// built on it. Errors are *fs.PathError wrapping a syscall.Errno; use
// errors.As to get the errno.
//
// # Access times
//
// Reads of file data, directory listings and symlink targets update atime
// by Options.Atime (relatime by default, as Linux), except reads through a
// File opened with O_NOATIME and a tree clone's reads. The new atime changes
// only the in-memory inode, which is queued and written by the next commit:
// a read never adds to the transaction itself (atime.go).
//
// # Reads and deletes
//
// File.ReadView hands out a read as slices of the cache's frames, pinned
// and with the file's lock held shared until Release, so a server can send
// them without copying (view.go). Deleting a file of many extents returns at
// once: the inode becomes an orphan that a background reaper frees in small
// operations (reap.go, docs/crash-protocol.md).
//
// # Copy detection
//
// File.WriteAtSharing writes like WriteAt but stores each block equal to a
// named source's block at the same offset as a reference to it (as
// CloneRange), and zeros over the source's holes as holes, so copies made
// with read and write share like reflinks (copyshare.go,
// docs/copy-sharing.md). Which sources are safe to name is the caller's
// decision: the FUSE frontend names only files the writer could read.
package reflinkfs
