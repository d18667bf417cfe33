package reflinkfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync/atomic"
	"syscall"
	"time"
)

// File is an open file of an FS. It is safe for concurrent use.
type File struct {
	fsys *FS
	in   *inode
	name string
	flag int
	// snapshot marks a File returned by Snapshot (its inode has no name).
	snapshot bool
	closed   atomic.Bool
	// Readahead state (a heuristic: racing readers only make it guess worse).
	raNext atomic.Int64 // where a sequential reader continues
	raDone atomic.Int64 // prefetched up to here
}

// Ino returns the file's inode number.
func (f *File) Ino() uint64 { return f.in.ino }

// Name returns the name the file was opened with.
func (f *File) Name() string { return f.name }

func (f *File) readable() bool { return f.flag&syscall.O_ACCMODE != syscall.O_WRONLY }
func (f *File) writable() bool { return f.flag&syscall.O_ACCMODE != syscall.O_RDONLY }

func (f *File) err(op string, err error) error { return pathErr(op, f.name, err) }

// OpenIno opens inode ino. flag is an os.O_* access mode with optional
// O_TRUNC, O_APPEND (needed to write an append-only file) and O_NOATIME
// (reads through the file leave atime alone); directories and special files
// can be opened read-only for Stat and ReadDir.
func (fsys *FS) OpenIno(ino uint64, flag int) (*File, error) {
	return fsys.openIno(ino, flag, true)
}

func (fsys *FS) openIno(ino uint64, flag int, truncate bool) (*File, error) {
	if fsys.opt.ReadOnly && flag&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, pathErr("open", inoName(ino), syscall.EROFS)
	}
	var f *File
	err := fsys.readMeta(func() error {
		in, err := fsys.getInode(ino)
		if err != nil {
			return err
		}
		if in.rec.Nlink == 0 && in.opens == 0 {
			fsys.putInode(in)
			return syscall.ENOENT
		}
		if !isReg(in.rec.Mode) && flag&syscall.O_ACCMODE != syscall.O_RDONLY {
			fsys.putInode(in)
			if isDir(in.rec.Mode) {
				return syscall.EISDIR
			}
			return syscall.EINVAL
		}
		if err := checkOpenFlags(in, flag); err != nil {
			fsys.putInode(in)
			return err
		}
		in.opens++
		f = &File{fsys: fsys, in: in, name: inoName(ino), flag: flag}
		return nil
	})
	if err != nil {
		return nil, pathErr("open", inoName(ino), err)
	}
	if truncate && flag&syscall.O_TRUNC != 0 && f.writable() {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// CreateAt creates a regular file in parent and opens it; with O_EXCL an
// existing name is EEXIST, without it an existing regular file is opened.
func (fsys *FS) CreateAt(parent uint64, name string, mode uint32, o Owner, flag int) (*File, Attr, error) {
	for attempt := 0; ; attempt++ {
		a, err := fsys.create("create", parent, name, syscall.S_IFREG|(mode&07777), 0, o, nil)
		if err == nil {
			f, err := fsys.openIno(a.Ino, flag&^syscall.O_TRUNC, false)
			return f, a, err
		}
		if !errors.Is(err, syscall.EEXIST) || flag&syscall.O_EXCL != 0 || attempt > 2 {
			return nil, Attr{}, err
		}
		a, err = fsys.Lookup(parent, name)
		if errors.Is(err, syscall.ENOENT) {
			continue // removed meanwhile: create again
		}
		if err != nil {
			return nil, Attr{}, err
		}
		f, err := fsys.OpenIno(a.Ino, flag)
		if err != nil {
			return nil, Attr{}, err
		}
		a, err = fsys.GetAttr(a.Ino)
		return f, a, err
	}
}

// Close releases the file; an unlinked file's blocks are freed when its last
// open file closes.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return f.err("close", fs.ErrClosed)
	}
	fsys := f.fsys
	f.in.lock.Lock()
	defer f.in.lock.Unlock()
	fsys.gate.RLock()
	op := &opState{}
	fsys.mu.Lock()
	var err error
	f.in.opens--
	if f.snapshot {
		fsys.snapshots--
		fsys.snapshotBlocks -= int64(f.in.rec.Blocks)
		err = fsys.countSnapshotRefs(f.in, -1)
	}
	if f.in.opens == 0 && f.in.rec.Nlink == 0 && !fsys.closed && !fsys.opt.ReadOnly {
		err = errors.Join(err, fsys.freeOrReap(op, f.in))
	}
	fsys.putInode(f.in)
	fsys.mu.Unlock()
	fsys.finish(op)
	fsys.gate.RUnlock()
	return f.err("close", err)
}

func (f *File) checkOpen() error {
	if f.closed.Load() {
		return fs.ErrClosed
	}
	return nil
}

// Stat returns the file's attributes.
func (f *File) Stat() (fs.FileInfo, error) {
	if err := f.checkOpen(); err != nil {
		return nil, f.err("stat", err)
	}
	var a Attr
	err := f.fsys.readMeta(func() error { a = f.fsys.attrOf(f.in); return nil })
	if err != nil {
		return nil, f.err("stat", err)
	}
	return &fileInfo{name: f.name, attr: a}, nil
}

// Attr returns the file's attributes.
func (f *File) Attr() (Attr, error) {
	var a Attr
	err := f.fsys.readMeta(func() error { a = f.fsys.attrOf(f.in); return nil })
	return a, err
}

// ReadAt reads len(p) bytes from off; at end of file it returns fewer bytes
// and io.EOF.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.checkRead(off, len(p)); err != nil {
		return 0, err
	}
	f.in.lock.RLock()
	defer f.in.lock.RUnlock()
	size := f.sizeForRead(len(p))
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	if err := f.fsys.readLocked(f.in, p[:n], off); err != nil {
		return 0, f.err("read", err)
	}
	f.sequentialRead(off, off+int64(n), size)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// sizeForRead returns the file's size for a read of n bytes and records
// the access (atime policy; none if opened with O_NOATIME) under the same
// lock. Called with the file's lock held.
func (f *File) sizeForRead(n int) int64 {
	var size int64
	f.fsys.readMeta(func() error {
		size = f.in.rec.Size
		if n > 0 && f.flag&syscall.O_NOATIME == 0 {
			f.fsys.accessed(f.in)
		}
		return nil
	})
	return size
}

// ReadDir lists the open directory as ReadDirIno does; the listing is an
// access unless the directory was opened with O_NOATIME.
func (f *File) ReadDir() ([]DirEntry, error) {
	if err := f.checkOpen(); err != nil {
		return nil, f.err("readdir", err)
	}
	return f.fsys.readDir(f.in.ino, f.flag&syscall.O_NOATIME == 0)
}

// checkRead checks a read of n bytes at off: file open and readable, off
// and n not negative.
func (f *File) checkRead(off int64, n int) error {
	if err := f.checkOpen(); err != nil {
		return f.err("read", err)
	}
	if !f.readable() {
		return f.err("read", syscall.EBADF)
	}
	if off < 0 || n < 0 {
		return f.err("read", syscall.EINVAL)
	}
	return nil
}

// sequentialRead notes a read of [off, end) and starts readahead when it
// continues the previous read.
func (f *File) sequentialRead(off, end, size int64) {
	if f.raNext.Swap(end) == off && end < size {
		f.readAhead(end, size)
	}
}

// readAheadBytes is how far ahead of a sequential reader blocks are read
// into the cache, in the background, so the device works while the reader
// copies and replies.
const readAheadBytes = 4 << 20

// readAhead starts loading [from, from+readAheadBytes) (capped at size) into
// the cache unless most of it is loaded or being loaded already.
func (f *File) readAhead(from, size int64) {
	done := f.raDone.Load()
	if done-from >= readAheadBytes/2 {
		return
	}
	start := max(from, done)
	stop := min(from+readAheadBytes, size)
	if stop <= start || !f.raDone.CompareAndSwap(done, stop) {
		return
	}
	fsys, in := f.fsys, f.in
	if !fsys.startPrefetch() {
		return
	}
	go func() {
		defer fsys.prefetching.Done()
		// The inode lock keeps the blocks referenced while they are read.
		in.lock.RLock()
		defer in.lock.RUnlock()
		var ms []mapping
		if err := fsys.readMeta(func() error {
			var err error
			ms, err = fsys.extentsIn(in, uint64(start)/BlockSize, (uint64(stop)+BlockSize-1)/BlockSize)
			return err
		}); err != nil {
			return
		}
		for _, m := range ms {
			if !m.unwritten {
				// Errors are counted and logged by verify; the reader that
				// needs the block gets them again.
				fsys.visitRun(in.ino, m.lblk, m.pblk, int(m.n), func(int, []byte) {})
			}
		}
	}()
}

// checkFlags refuses a change the file's flags forbid (checkModify);
// appending, if set, says whether the change only appends to a file of the
// given size. Called with the file's lock held exclusively.
func (f *File) checkFlags(appending func(size int64) bool) error {
	return f.fsys.locked(func() error {
		return checkModify(f.in, appending != nil && appending(f.in.rec.Size))
	})
}

// appendOnly is checkFlags' appending for changes that never touch data
// already written (allocation).
func appendOnly(int64) bool { return true }

// mutate runs fn with the file's lock held exclusively and the commit gate
// held shared; fn takes fs.mu itself where needed. On ENOSPC caused by
// blocks waiting for a commit (or for the reaper to free deleted files), it
// waits for them, commits and retries once.
func (f *File) mutate(opName string, fn func(op *opState) error) error {
	if err := f.checkOpen(); err != nil {
		return f.err(opName, err)
	}
	if !f.writable() {
		return f.err(opName, syscall.EBADF)
	}
	fsys := f.fsys
	if fsys.opt.ReadOnly {
		return f.err(opName, syscall.EROFS)
	}
	for attempt := 0; ; attempt++ {
		err := f.mutateOnce(fn)
		if attempt == 0 && errors.Is(err, syscall.ENOSPC) {
			reaping := fsys.reaping() > 0
			fsys.WaitReaped() // deleted files still being freed
			fsys.mu.Lock()
			q := fsys.alloc.Quarantined()
			fsys.mu.Unlock()
			if q > 0 || reaping {
				if cerr := fsys.commit(); cerr == nil {
					continue
				}
			}
		}
		fsys.maybeCommit()
		return f.err(opName, err)
	}
}

func (f *File) mutateOnce(fn func(op *opState) error) error {
	fsys := f.fsys
	f.in.lock.Lock()
	defer f.in.lock.Unlock()
	fsys.gate.RLock()
	defer fsys.gate.RUnlock()
	op := &opState{}
	defer fsys.finish(op)
	if fsys.isClosed() {
		return fs.ErrClosed
	}
	return fn(op)
}

func (fsys *FS) isClosed() bool {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.closed
}

// touch sets mtime and ctime and grows the size to at least size, then
// saves the inode. Called with fs.mu held.
func (fsys *FS) touch(in *inode, size int64) error {
	now := time.Now().UnixNano()
	in.rec.Mtime, in.rec.Ctime = now, now
	if size > in.rec.Size {
		in.rec.Size = size
	}
	return fsys.saveInode(in)
}

func (fsys *FS) locked(fn func() error) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fn()
}

func checkRange(off, length int64) error {
	if off < 0 || length < 0 || off > maxFileSize || length > maxFileSize-off {
		if off >= 0 && length >= 0 {
			return syscall.EFBIG
		}
		return syscall.EINVAL
	}
	return nil
}

// checkFallocRange checks the range of a fallocate-style operation, where,
// as in fallocate(2), a zero length is EINVAL.
func checkFallocRange(off, length int64) error {
	if err := checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return syscall.EINVAL
	}
	return nil
}

// WriteAt writes p at off, growing the file as needed.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if err := checkRange(off, int64(len(p))); err != nil {
		return 0, f.err("write", err)
	}
	err := f.mutate("write", func(op *opState) error {
		if err := f.checkFlags(func(size int64) bool { return off == size }); err != nil {
			return err
		}
		if err := f.fsys.writeLocked(op, f.in, p, off); err != nil {
			return err
		}
		return f.fsys.locked(func() error { return f.fsys.touch(f.in, off+int64(len(p))) })
	})
	if err != nil {
		return 0, err
	}
	f.fsys.throttleDirty()
	return len(p), nil
}

// Truncate changes the file size. Shrinking releases the blocks past the
// new end and zeroes the rest of the last block.
func (f *File) Truncate(size int64) error {
	if err := checkRange(size, 0); err != nil {
		return f.err("truncate", err)
	}
	return f.mutate("truncate", func(op *opState) error {
		if err := f.checkFlags(nil); err != nil {
			return err
		}
		fsys := f.fsys
		var old int64
		fsys.locked(func() error { old = f.in.rec.Size; return nil })
		if size < old && size%BlockSize != 0 {
			end := min(old, (size/BlockSize+1)*BlockSize)
			if err := fsys.zeroPartial(op, f.in, size, end); err != nil {
				return err
			}
		}
		return fsys.locked(func() error {
			if size < old {
				first := (uint64(size) + BlockSize - 1) / BlockSize
				removed, err := fsys.unmapRange(f.in, first, ^uint64(0))
				if err != nil {
					return err
				}
				if err := fsys.release(op, removed); err != nil {
					return err
				}
			}
			f.in.rec.Size = size
			return fsys.touch(f.in, size)
		})
	})
}

// Sync makes the file's data and metadata durable (fsync). It commits the
// whole running transaction.
func (f *File) Sync() error {
	if err := f.checkOpen(); err != nil {
		return f.err("sync", err)
	}
	return f.err("sync", f.fsys.commit())
}

// fullBlocks returns the whole blocks inside [off, off+length).
func fullBlocks(off, length int64) (first, end uint64) {
	first = (uint64(off) + BlockSize - 1) / BlockSize
	end = uint64(off+length) / BlockSize
	if end < first {
		end = first
	}
	return first, end
}

// zeroEdges zeroes the partial blocks at the edges of [off, off+length).
func (f *File) zeroEdges(op *opState, off, length int64) error {
	first, end := fullBlocks(off, length)
	headEnd := min(off+length, int64(first)*BlockSize)
	if err := f.fsys.zeroPartial(op, f.in, off, headEnd); err != nil {
		return err
	}
	tailStart := max(int64(end)*BlockSize, headEnd)
	return f.fsys.zeroPartial(op, f.in, tailStart, off+length)
}

// PunchHole deallocates [off, off+length): whole blocks become holes, partial
// blocks are zeroed. The size does not change.
func (f *File) PunchHole(off, length int64) error {
	if err := checkFallocRange(off, length); err != nil {
		return f.err("punch", err)
	}
	return f.mutate("punch", func(op *opState) error {
		if err := f.checkFlags(nil); err != nil {
			return err
		}
		if err := f.zeroEdges(op, off, length); err != nil {
			return err
		}
		first, end := fullBlocks(off, length)
		return f.fsys.locked(func() error {
			removed, err := f.fsys.unmapRange(f.in, first, end)
			if err != nil {
				return err
			}
			if err := f.fsys.release(op, removed); err != nil {
				return err
			}
			return f.fsys.touch(f.in, 0)
		})
	})
}

// ZeroRange makes [off, off+length) read as zeros with space allocated:
// whole blocks become preallocated (unwritten) blocks, partial ones are
// zeroed. The file grows to off+length if shorter.
func (f *File) ZeroRange(off, length int64) error {
	return f.zeroRange(off, length, false)
}

// ZeroRangeKeepSize is ZeroRange without changing the file size.
func (f *File) ZeroRangeKeepSize(off, length int64) error {
	return f.zeroRange(off, length, true)
}

func (f *File) zeroRange(off, length int64, keepSize bool) error {
	if err := checkFallocRange(off, length); err != nil {
		return f.err("zero range", err)
	}
	return f.mutate("zero range", func(op *opState) error {
		if err := f.checkFlags(nil); err != nil {
			return err
		}
		fsys := f.fsys
		first, end := fullBlocks(off, length)
		if err := fsys.locked(func() error {
			if end-first > fsys.alloc.Allocatable() {
				return errNoSpace(fsys)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := f.zeroEdges(op, off, length); err != nil {
			return err
		}
		return fsys.locked(func() error {
			if end > first {
				if _, err := fsys.remapNew(op, f.in, first, end-first, true); err != nil {
					return err
				}
			}
			size := off + length
			if keepSize {
				size = 0
			}
			return fsys.touch(f.in, size)
		})
	})
}

// Allocate preallocates blocks for the holes of [off, off+length) (they read
// as zeros) and grows the file to off+length if shorter (fallocate mode 0).
func (f *File) Allocate(off, length int64) error { return f.allocate(off, length, false) }

// AllocateKeepSize preallocates without changing the size (FALLOC_FL_KEEP_SIZE).
func (f *File) AllocateKeepSize(off, length int64) error { return f.allocate(off, length, true) }

func (f *File) allocate(off, length int64, keepSize bool) error {
	if err := checkFallocRange(off, length); err != nil {
		return f.err("allocate", err)
	}
	return f.mutate("allocate", func(op *opState) error {
		if err := f.checkFlags(appendOnly); err != nil {
			return err
		}
		fsys := f.fsys
		return fsys.locked(func() error {
			b0 := uint64(off) / BlockSize
			b1 := (uint64(off+length) + BlockSize - 1) / BlockSize
			ms, err := fsys.extentsIn(f.in, b0, b1)
			if err != nil {
				return err
			}
			var holes []mapping
			pos := b0
			for _, m := range append(ms, mapping{lblk: b1}) {
				if m.lblk > pos {
					holes = append(holes, mapping{lblk: pos, n: m.lblk - pos})
				}
				pos = m.end()
			}
			need := uint64(0)
			for _, h := range holes {
				need += h.n
			}
			if need > fsys.alloc.Allocatable() {
				return errNoSpace(fsys)
			}
			for _, h := range holes {
				if _, err := fsys.remapNew(op, f.in, h.lblk, h.n, true); err != nil {
					return err
				}
			}
			size := off + length
			if keepSize {
				size = 0
			}
			now := time.Now().UnixNano()
			f.in.rec.Ctime = now
			if size > f.in.rec.Size {
				f.in.rec.Size = size
				f.in.rec.Mtime = now
			}
			return fsys.saveInode(f.in)
		})
	})
}

// UnshareRange gives the file private copies of the shared blocks in
// [off, off+length), so later writes there need no copy.
func (f *File) UnshareRange(off, length int64) error {
	if err := checkFallocRange(off, length); err != nil {
		return f.err("unshare", err)
	}
	return f.mutate("unshare", func(op *opState) error {
		if err := f.checkFlags(nil); err != nil {
			return err
		}
		fsys := f.fsys
		b0 := uint64(off) / BlockSize
		b1 := (uint64(off+length) + BlockSize - 1) / BlockSize
		var shared []mapping
		err := fsys.locked(func() error {
			ms, err := fsys.extentsIn(f.in, b0, b1)
			if err != nil {
				return err
			}
			for _, m := range ms {
				runs, err := fsys.refRuns(m.pblk, m.n)
				if err != nil {
					return err
				}
				for _, r := range runs {
					if r.count > 1 {
						shared = append(shared, mapping{lblk: m.lblk + r.start - m.pblk, pblk: r.start, n: r.n, unwritten: m.unwritten})
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, m := range shared {
			if m.unwritten {
				err = fsys.locked(func() error {
					_, err := fsys.remapNew(op, f.in, m.lblk, m.n, true)
					return err
				})
			} else {
				err = fsys.copyOnWrite(op, f.in, m.lblk, m.n)
			}
			if err != nil {
				return err
			}
		}
		return fsys.locked(func() error {
			f.in.rec.Ctime = time.Now().UnixNano()
			return fsys.saveInode(f.in)
		})
	})
}

// copyOnWrite rewrites file blocks [lblk, lblk+n) with their own contents,
// which moves shared blocks to private ones.
func (fsys *FS) copyOnWrite(op *opState, in *inode, lblk, n uint64) error {
	var plan []blockWrite
	err := fsys.locked(func() error {
		var err error
		plan, err = fsys.planWrite(op, in, lblk, lblk+n)
		return err
	})
	if err != nil {
		return err
	}
	return fsys.fillBlocks(in, plan, 0, 0, func(uint64, []byte) {})
}

// lockPair locks two files' inodes in a fixed order (exclusive for dst,
// shared for src unless they are the same inode).
func lockPair(dst, src *inode) func() {
	if dst == src {
		dst.lock.Lock()
		return dst.lock.Unlock
	}
	if dst.ino < src.ino {
		dst.lock.Lock()
		src.lock.RLock()
	} else {
		src.lock.RLock()
		dst.lock.Lock()
	}
	return func() { src.lock.RUnlock(); dst.lock.Unlock() }
}

// pairOp runs fn for an operation from src into f (the destination).
func (f *File) pairOp(opName string, src *File, fn func(op *opState) error) error {
	for _, x := range []*File{f, src} {
		if err := x.checkOpen(); err != nil {
			return x.err(opName, err)
		}
	}
	if src.fsys != f.fsys {
		return f.err(opName, syscall.EXDEV)
	}
	if !f.writable() || !src.readable() {
		return f.err(opName, syscall.EBADF)
	}
	var regular bool
	f.fsys.locked(func() error { regular = isReg(f.in.rec.Mode) && isReg(src.in.rec.Mode); return nil })
	if !regular {
		return f.err(opName, syscall.EINVAL)
	}
	fsys := f.fsys
	if fsys.opt.ReadOnly {
		return f.err(opName, syscall.EROFS)
	}
	unlock := lockPair(f.in, src.in)
	fsys.gate.RLock()
	op := &opState{}
	err := f.checkFlags(nil)
	if err == nil {
		err = fn(op)
	}
	fsys.finish(op)
	fsys.gate.RUnlock()
	unlock()
	fsys.maybeCommit()
	return f.err(opName, err)
}

// flushShared writes back dirty data of src's blocks [lblk, lblk+n) so that
// blocks are clean before they become shared. Called with fs.mu held.
func (fsys *FS) flushShared(src *inode, lblk, n uint64) error {
	if fsys.fresh.Len() == 0 {
		return nil // nothing written since the last commit: nothing dirty
	}
	ms, err := fsys.extentsIn(src, lblk, lblk+n)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.unwritten || !fsys.freshOverlaps(m.pblk, m.n) {
			continue // only fresh blocks can be dirty
		}
		if err := fsys.cache.FlushDirty(m.pblk, m.pblk+m.n, fsys.writeBackRun); err != nil {
			return err
		}
	}
	return nil
}

// freshOverlaps reports whether any block of [p, p+n) is fresh.
func (fsys *FS) freshOverlaps(p, n uint64) bool {
	if fsys.isFresh(p) {
		return true
	}
	found := false
	fsys.fresh.AscendRange(allocRun(p, 0), allocRun(p+n, 0), func(r allocRunT) bool {
		found = true
		return false
	})
	return found
}

// remap makes dst blocks [dstBlk, dstBlk+n) share src blocks [srcBlk,
// srcBlk+n) (holes stay holes). Called with fs.mu held and both inode locks.
func (fsys *FS) remap(op *opState, dst, src *inode, srcBlk, dstBlk, n uint64) error {
	if err := fsys.flushShared(src, srcBlk, n); err != nil {
		return err
	}
	ms, err := fsys.extentsIn(src, srcBlk, srcBlk+n)
	if err != nil {
		return err
	}
	// Take the new references before dropping the old ones: when dst and src
	// share blocks already, a block must not reach count zero in between.
	if err := fsys.share(ms); err != nil {
		return err
	}
	removed, err := fsys.unmapRange(dst, dstBlk, dstBlk+n)
	if err != nil {
		return err
	}
	if err := fsys.release(op, removed); err != nil {
		return err
	}
	for _, m := range ms {
		m.lblk = m.lblk - srcBlk + dstBlk
		if err := fsys.mapRange(dst, m); err != nil {
			return err
		}
	}
	return nil
}

// CloneRange makes [dstOff, dstOff+length) of f share src's blocks at
// [srcOff, srcOff+length), as FICLONERANGE: offsets must be block aligned,
// and so must length unless the range ends at src's end of file (and does
// not end inside f). length 0 means to src's end of file.
func (f *File) CloneRange(src *File, srcOff, length, dstOff int64) error {
	return f.pairOp("clone", src, func(op *opState) error {
		fsys := f.fsys
		return fsys.locked(func() error {
			srcSize, dstSize := src.in.rec.Size, f.in.rec.Size
			if length == 0 {
				length = srcSize - srcOff
			}
			if err := checkClone(srcOff, length, dstOff, srcSize, dstSize, f.in == src.in); err != nil {
				return err
			}
			if length == 0 {
				return nil
			}
			n := (uint64(length) + BlockSize - 1) / BlockSize
			if err := fsys.remap(op, f.in, src.in, uint64(srcOff)/BlockSize, uint64(dstOff)/BlockSize, n); err != nil {
				return err
			}
			return fsys.touch(f.in, dstOff+length)
		})
	})
}

func checkClone(srcOff, length, dstOff, srcSize, dstSize int64, same bool) error {
	if err := checkRange(srcOff, length); err != nil {
		return err
	}
	if err := checkRange(dstOff, length); err != nil {
		return err
	}
	if srcOff%BlockSize != 0 || dstOff%BlockSize != 0 || srcOff+length > srcSize {
		return syscall.EINVAL
	}
	if length%BlockSize != 0 && !(srcOff+length == srcSize && dstOff+length >= dstSize) {
		return syscall.EINVAL
	}
	if same && srcOff < dstOff+length && dstOff < srcOff+length {
		return syscall.EINVAL
	}
	return nil
}

// DedupeRange shares src's blocks [srcOff, srcOff+length) into f at dstOff
// if both ranges hold identical bytes (FIDEDUPERANGE). It returns the bytes
// deduplicated, or ErrRangesDiffer and changes nothing.
func (f *File) DedupeRange(src *File, srcOff, length, dstOff int64) (int64, error) {
	var done int64
	err := f.pairOp("dedupe", src, func(op *opState) error {
		fsys := f.fsys
		var srcSize, dstSize int64
		fsys.locked(func() error { srcSize, dstSize = src.in.rec.Size, f.in.rec.Size; return nil })
		if err := checkRange(srcOff, length); err != nil {
			return err
		}
		if err := checkRange(dstOff, length); err != nil {
			return err
		}
		if srcOff%BlockSize != 0 || dstOff%BlockSize != 0 {
			return syscall.EINVAL
		}
		length = min(length, srcSize-srcOff, dstSize-dstOff)
		if length <= 0 {
			return nil
		}
		if length%BlockSize != 0 && !(srcOff+length == srcSize && dstOff+length == dstSize) {
			length -= length % BlockSize
		}
		if length == 0 {
			return nil
		}
		if f.in == src.in && srcOff < dstOff+length && dstOff < srcOff+length {
			return syscall.EINVAL
		}
		same, err := fsys.sameBytes(f.in, src.in, dstOff, srcOff, length)
		if err != nil {
			return err
		}
		if !same {
			return ErrRangesDiffer
		}
		n := (uint64(length) + BlockSize - 1) / BlockSize
		err = fsys.locked(func() error {
			if err := fsys.remap(op, f.in, src.in, uint64(srcOff)/BlockSize, uint64(dstOff)/BlockSize, n); err != nil {
				return err
			}
			// Contents are unchanged, so times are too; the block count is not.
			return fsys.saveInode(f.in)
		})
		if err == nil {
			done = length
		}
		return err
	})
	if errors.Is(err, ErrRangesDiffer) {
		return 0, ErrRangesDiffer
	}
	return done, err
}

// segment is a run of blocks, relative to the start of a compared range,
// that is uniformly a hole/unwritten (zero) or written at physical pblk.
type segment struct {
	start, end uint64
	written    bool
	pblk       uint64
}

// segments describes blocks [first, first+n) of in as segments.
func (fsys *FS) segments(in *inode, first, n uint64) ([]segment, error) {
	ms, err := fsys.extentsIn(in, first, first+n)
	if err != nil {
		return nil, err
	}
	var out []segment
	pos := uint64(0)
	for _, m := range ms {
		s := m.lblk - first
		if s > pos {
			out = append(out, segment{start: pos, end: s})
		}
		out = append(out, segment{start: s, end: s + m.n, written: !m.unwritten, pblk: m.pblk})
		pos = s + m.n
	}
	if pos < n {
		out = append(out, segment{start: pos, end: n})
	}
	return out, nil
}

// sameBytes reports whether a's [aOff, aOff+length) equals b's [bOff, ...).
// Offsets are block aligned. Ranges that already share physical blocks, or
// are holes on both sides, are equal without reading them; the rest is
// compared chunk by chunk.
func (fsys *FS) sameBytes(a, b *inode, aOff, bOff, length int64) (bool, error) {
	n := (uint64(length) + BlockSize - 1) / BlockSize
	var sa, sb []segment
	err := fsys.locked(func() error {
		var err error
		if sa, err = fsys.segments(a, uint64(aOff)/BlockSize, n); err != nil {
			return err
		}
		sb, err = fsys.segments(b, uint64(bOff)/BlockSize, n)
		return err
	})
	if err != nil {
		return false, err
	}
	const chunk = 1 << 20
	var bufA, bufB []byte
	compare := func(from, to uint64) (bool, error) { // block offsets within the range
		if bufA == nil {
			bufA, bufB = make([]byte, chunk), make([]byte, chunk)
		}
		start, end := int64(from)*BlockSize, min(int64(to)*BlockSize, length)
		for pos := start; pos < end; {
			c := min(end-pos, chunk)
			if err := fsys.readLocked(a, bufA[:c], aOff+pos); err != nil {
				return false, err
			}
			if err := fsys.readLocked(b, bufB[:c], bOff+pos); err != nil {
				return false, err
			}
			if !bytes.Equal(bufA[:c], bufB[:c]) {
				return false, nil
			}
			pos += c
		}
		return true, nil
	}
	i, j := 0, 0
	for i < len(sa) && j < len(sb) {
		x, y := sa[i], sb[j]
		from, to := max(x.start, y.start), min(x.end, y.end)
		known := (!x.written && !y.written) ||
			(x.written && y.written && x.pblk+(from-x.start) == y.pblk+(from-y.start))
		if !known {
			same, err := compare(from, to)
			if err != nil || !same {
				return false, err
			}
		}
		if x.end == to {
			i++
		}
		if y.end == to {
			j++
		}
	}
	return true, nil
}

// CopyRange copies length bytes from src at srcOff to f at dstOff, as
// copy_file_range(2): whole blocks are shared (reflinked) when both offsets
// have the same alignment, the rest is copied. It returns the bytes copied
// (fewer at src's end of file).
func (f *File) CopyRange(src *File, srcOff, length, dstOff int64) (int64, error) {
	var copied int64
	err := f.pairOp("copy range", src, func(op *opState) error {
		fsys := f.fsys
		if err := checkRange(srcOff, length); err != nil {
			return err
		}
		if err := checkRange(dstOff, length); err != nil {
			return err
		}
		var srcSize, dstSize int64
		fsys.locked(func() error { srcSize, dstSize = src.in.rec.Size, f.in.rec.Size; return nil })
		n := min(length, srcSize-srcOff)
		if n <= 0 {
			return nil
		}
		if f.in == src.in && srcOff < dstOff+n && dstOff < srcOff+n {
			return syscall.EINVAL // overlapping copy within one file
		}
		copyBytes := func(from, to int64) error { // src offsets
			if from >= to {
				return nil
			}
			buf := make([]byte, min(to-from, 1<<20))
			for pos := from; pos < to; {
				c := min(to-pos, int64(len(buf)))
				if err := fsys.readLocked(src.in, buf[:c], pos); err != nil {
					return err
				}
				if err := fsys.writeLocked(op, f.in, buf[:c], dstOff+(pos-srcOff)); err != nil {
					return err
				}
				pos += c
			}
			return nil
		}
		head, tail := srcOff+n, srcOff+n // the cloned part is [head, tail)
		if srcOff%BlockSize == dstOff%BlockSize {
			head = min((srcOff+BlockSize-1)/BlockSize*BlockSize, srcOff+n)
			tail = (srcOff + n) / BlockSize * BlockSize
			// The partial block at src's end of file may be shared too when
			// it does not end inside the destination.
			if srcOff+n == srcSize && dstOff+n >= dstSize && tail < srcOff+n && head <= tail {
				tail = srcOff + n
			}
			if tail < head {
				head, tail = srcOff+n, srcOff+n
			}
		}
		if err := copyBytes(srcOff, head); err != nil {
			return err
		}
		if tail > head {
			blocks := (uint64(tail-head) + BlockSize - 1) / BlockSize
			if err := fsys.locked(func() error {
				return fsys.remap(op, f.in, src.in, uint64(head)/BlockSize, uint64(dstOff+head-srcOff)/BlockSize, blocks)
			}); err != nil {
				return err
			}
		}
		if err := copyBytes(tail, srcOff+n); err != nil {
			return err
		}
		copied = n
		return fsys.locked(func() error { return fsys.touch(f.in, dstOff+n) })
	})
	return copied, err
}

// Fiemap returns the file's extent map; extents are split where their
// sharing changes.
func (f *File) Fiemap() ([]Extent, error) {
	if err := f.checkOpen(); err != nil {
		return nil, f.err("fiemap", err)
	}
	f.in.lock.RLock()
	defer f.in.lock.RUnlock()
	var out []Extent
	err := f.fsys.readMeta(func() error {
		ms, err := f.fsys.extentsIn(f.in, 0, ^uint64(0))
		if err != nil {
			return err
		}
		for _, m := range ms {
			runs, err := f.fsys.userRefRuns(m.pblk, m.n)
			if err != nil {
				return err
			}
			for _, r := range runs {
				out = append(out, Extent{
					Logical:   int64(m.lblk+r.start-m.pblk) * BlockSize,
					Physical:  int64(r.start) * BlockSize,
					Length:    int64(r.n) * BlockSize,
					Shared:    r.count > 1,
					Unwritten: m.unwritten,
				})
			}
		}
		return nil
	})
	return out, f.err("fiemap", err)
}

// SeekData returns the first offset >= off holding data (written blocks;
// preallocated blocks count as holes), or ENXIO past the last data.
func (f *File) SeekData(off int64) (int64, error) {
	return f.seek("seek data", off, true)
}

// SeekHole returns the first offset >= off in a hole; the end of file
// counts as a hole.
func (f *File) SeekHole(off int64) (int64, error) {
	return f.seek("seek hole", off, false)
}

func (f *File) seek(opName string, off int64, data bool) (int64, error) {
	if err := f.checkOpen(); err != nil {
		return 0, f.err(opName, err)
	}
	if off < 0 {
		return 0, f.err(opName, syscall.ENXIO)
	}
	f.in.lock.RLock()
	defer f.in.lock.RUnlock()
	var res int64
	err := f.fsys.readMeta(func() error {
		size := f.in.rec.Size
		if off >= size {
			return syscall.ENXIO
		}
		ms, err := f.fsys.extentsIn(f.in, uint64(off)/BlockSize, ^uint64(0))
		if err != nil {
			return err
		}
		pos := off
		for _, m := range ms {
			if m.unwritten {
				continue
			}
			start, end := int64(m.lblk)*BlockSize, int64(m.end())*BlockSize
			if data {
				if end > pos {
					res = max(pos, start)
					if res >= size {
						return syscall.ENXIO
					}
					return nil
				}
				continue
			}
			if start > pos {
				break // pos is in a hole
			}
			pos = max(pos, end)
		}
		if data {
			return syscall.ENXIO
		}
		res = min(pos, size)
		return nil
	})
	if err != nil {
		return 0, f.err(opName, err)
	}
	return res, nil
}

var _ = fmt.Sprintf
