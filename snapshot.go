package reflinkfs

// Snapshots and content identity, for sharing the kernel's page cache between
// clones (FUSE passthrough, internal/backing): a snapshot is a whole-file
// clone with no name, which nothing can change, so a cache of its contents
// never goes stale; a content key tells which open files read the same
// blocks at the same offsets as a snapshot.

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// ContentInfo describes what a regular file reads: its size and its extent
// map. Two files with equal Size and extent maps read the same bytes.
type ContentInfo struct {
	// Key is a 64-bit hash of the size and the extent map (file block,
	// physical block, length, unwritten flag of every extent). Equal maps
	// give equal keys; confirm a match with SameContent.
	Key          uint64
	Size         int64
	Extents      int
	MappedBlocks int64
	// SharedBlocks counts mapped blocks whose reference count is above one:
	// blocks the file shares with other files (or with itself).
	SharedBlocks int64
}

// ContentInfo reports f's size, extent map key and how much of it is shared.
// It walks the in-memory extent map: O(extents).
func (f *File) ContentInfo() (ContentInfo, error) {
	if err := f.checkOpen(); err != nil {
		return ContentInfo{}, f.err("content", err)
	}
	var ci ContentInfo
	err := f.fsys.locked(func() error {
		if !isReg(f.in.rec.Mode) {
			return syscall.EINVAL
		}
		t, err := f.fsys.extents(f.in)
		if err != nil {
			return err
		}
		h := xxhash.New()
		var b [8 * 4]byte
		binary.LittleEndian.PutUint64(b[:8], uint64(f.in.rec.Size))
		h.Write(b[:8])
		ci.Size = f.in.rec.Size
		t.Ascend(func(m mapping) bool {
			binary.LittleEndian.PutUint64(b[0:], m.lblk)
			binary.LittleEndian.PutUint64(b[8:], m.pblk)
			binary.LittleEndian.PutUint64(b[16:], m.n)
			binary.LittleEndian.PutUint64(b[24:], uint64(m.flags()))
			h.Write(b[:])
			ci.Extents++
			ci.MappedBlocks += int64(m.n)
			runs, _ := f.fsys.userRefRuns(m.pblk, m.n) // in memory: never fails
			for _, r := range runs {
				if r.count >= 2 {
					ci.SharedBlocks += int64(r.n)
				}
			}
			return true
		})
		ci.Key = h.Sum64()
		return nil
	})
	return ci, f.err("content", err)
}

// SameContent reports whether f and g have the same size and map the same
// physical blocks at the same offsets (so they read the same bytes).
func (f *File) SameContent(g *File) (bool, error) {
	for _, x := range []*File{f, g} {
		if err := x.checkOpen(); err != nil {
			return false, x.err("content", err)
		}
	}
	if f.fsys != g.fsys {
		return false, nil
	}
	same := false
	err := f.fsys.locked(func() error {
		if f.in.rec.Size != g.in.rec.Size || !isReg(f.in.rec.Mode) || !isReg(g.in.rec.Mode) {
			return nil
		}
		a, err := f.fsys.extents(f.in)
		if err != nil {
			return err
		}
		b, err := f.fsys.extents(g.in)
		if err != nil {
			return err
		}
		if a.Len() != b.Len() {
			return nil
		}
		ms := make([]mapping, 0, a.Len())
		a.Ascend(func(m mapping) bool { ms = append(ms, m); return true })
		i := 0
		same = true
		b.Ascend(func(m mapping) bool {
			same = ms[i] == m
			i++
			return same
		})
		return nil
	})
	return same, f.err("content", err)
}

// Snapshot returns a read-only File of a new inode with no name that
// shares every block of f at the same offsets: a whole-file clone nothing
// can write to, rename or link. Its blocks stay allocated until it is
// closed; after a crash it is an orphan, freed at the next mount. Dirty data
// of f is written back first, as for every clone. f must be readable.
//
// Snapshots are not user files: Stats counts them apart (SnapshotFiles,
// SnapshotBytes) and leaves them out of LogicalBytes.
func (f *File) Snapshot() (*File, error) {
	if err := f.checkOpen(); err != nil {
		return nil, f.err("snapshot", err)
	}
	if !f.readable() {
		return nil, f.err("snapshot", syscall.EBADF)
	}
	fsys := f.fsys
	if fsys.opt.ReadOnly {
		return nil, f.err("snapshot", syscall.EROFS)
	}
	f.in.lock.RLock()
	defer f.in.lock.RUnlock()
	fsys.gate.RLock()
	op := &opState{}
	var snap *inode
	err := fsys.locked(func() error {
		if fsys.closed {
			return fs.ErrClosed
		}
		if !isReg(f.in.rec.Mode) {
			return syscall.EINVAL
		}
		now := time.Now().UnixNano()
		in := &inode{ino: fsys.sb.NextIno, refs: 1, opens: 1, ext: newExtentTree(), rec: meta.Inode{
			Gen: fsys.sb.NextGen, Mode: syscall.S_IFREG | 0o400, Nlink: 0,
			Atime: now, Mtime: f.in.rec.Mtime, Ctime: now, Btime: now,
		}}
		fsys.sb.NextIno++
		fsys.sb.NextGen++
		fsys.inodes[in.ino] = in
		fsys.inodeCount++
		k := meta.OrphanKey(in.ino)
		if err := fsys.txn.Set(k, meta.EncodeBytes(k, nil)); err != nil {
			return err
		}
		// The new inode is reachable by no one else: its lock is not needed.
		n := (uint64(f.in.rec.Size) + BlockSize - 1) / BlockSize
		if n > 0 {
			if err := fsys.remap(op, in, f.in, 0, 0, n); err != nil {
				return errors.Join(err, fsys.freeInode(op, in))
			}
		}
		in.rec.Size = f.in.rec.Size
		if err := fsys.saveInode(in); err != nil {
			return err
		}
		if err := fsys.countSnapshotRefs(in, +1); err != nil {
			return err
		}
		fsys.snapshots++
		fsys.snapshotBlocks += int64(in.rec.Blocks)
		snap = in
		return nil
	})
	fsys.finish(op)
	fsys.gate.RUnlock()
	if err != nil {
		return nil, f.err("snapshot", err)
	}
	fsys.maybeCommit()
	s := &File{fsys: fsys, in: snap, name: inoName(snap.ino), flag: syscall.O_RDONLY, snapshot: true}
	return s, nil
}

// Snapshot references. A snapshot's references are real (they keep its
// blocks allocated), but a snapshot is not a file: a block shared only with
// a snapshot is not "shared" to Fiemap, Stats or ContentInfo. snapRefs
// counts, per physical block, the open snapshots that map it (in memory
// only: snapshots do not survive a restart).

// countSnapshotRefs adds delta to the snapshot count of every block in's
// extent map. Called with fs.mu held.
func (fsys *FS) countSnapshotRefs(in *inode, delta int) error {
	t, err := fsys.extents(in)
	if err != nil {
		return err
	}
	t.Ascend(func(m mapping) bool {
		adjustRunTree(fsys.snapRefs, m.pblk, m.n, delta)
		return true
	})
	return nil
}

// adjustRunTree adds delta to the counts of [p, p+n) in t (gaps count 0),
// dropping runs that reach 0. Runs are not merged: t stays small.
func adjustRunTree(t *refTree, p, n uint64, delta int) {
	end := p + n
	var over []refRun
	t.DescendLessOrEqual(refRun{start: p}, func(r refRun) bool {
		if r.start < p && r.start+r.n > p {
			over = append(over, r)
		}
		return false
	})
	t.AscendGreaterOrEqual(refRun{start: p}, func(r refRun) bool {
		if r.start >= end {
			return false
		}
		over = append(over, r)
		return true
	})
	for _, r := range over {
		t.Delete(r)
	}
	put := func(start, n uint64, count int) {
		if n > 0 && count > 0 {
			t.ReplaceOrInsert(refRun{start: start, n: n, count: uint32(count)})
		}
	}
	pos := p
	for _, r := range over {
		rEnd := r.start + r.n
		put(r.start, max(r.start, p)-r.start, int(r.count)) // part before p
		if s := max(r.start, p); s > pos {
			put(pos, s-pos, delta) // gap before this run
		}
		s, e := max(r.start, p), min(rEnd, end)
		put(s, e-s, int(r.count)+delta)
		put(e, rEnd-e, int(r.count)) // part after end
		pos = e
	}
	if pos < end {
		put(pos, end-pos, delta)
	}
}

// userRefRuns is refRuns with the references of snapshots left out: the
// number of files (and links within files) that map each block.
func (fsys *FS) userRefRuns(p, n uint64) ([]refRun, error) {
	runs, err := fsys.refRuns(p, n)
	if err != nil || fsys.snapRefs.Len() == 0 {
		return runs, err
	}
	var out []refRun
	for _, r := range runs {
		pos, end := r.start, r.start+r.n
		for _, s := range snapRunsIn(fsys.snapRefs, r.start, r.n) {
			if s.start > pos {
				out = append(out, refRun{pos, s.start - pos, r.count})
			}
			out = append(out, refRun{s.start, s.n, r.count - min(r.count, s.count)})
			pos = s.start + s.n
		}
		if pos < end {
			out = append(out, refRun{pos, end - pos, r.count})
		}
	}
	return out, nil
}

// snapRunsIn returns t's runs inside [p, p+n), clipped, in order.
func snapRunsIn(t *refTree, p, n uint64) []refRun {
	end := p + n
	var out []refRun
	clipRun := func(r refRun) {
		s, e := max(r.start, p), min(r.start+r.n, end)
		if s < e {
			out = append(out, refRun{s, e - s, r.count})
		}
	}
	t.DescendLessOrEqual(refRun{start: p}, func(r refRun) bool {
		if r.start < p {
			clipRun(r)
		}
		return false
	})
	t.AscendGreaterOrEqual(refRun{start: p}, func(r refRun) bool {
		if r.start >= end {
			return false
		}
		clipRun(r)
		return true
	})
	return out
}

// snapshotOnlySharedBlocks counts blocks whose reference count is 2 or
// more only because snapshots map them. Called with fs.mu held.
func (fsys *FS) snapshotOnlySharedBlocks() int64 {
	var n int64
	fsys.snapRefs.Ascend(func(s refRun) bool {
		runs, _ := fsys.refRuns(s.start, s.n) // in memory: never fails
		for _, r := range runs {
			if r.count >= 2 && r.count-min(r.count, s.count) < 2 {
				n += int64(r.n)
			}
		}
		return true
	})
	return n
}
