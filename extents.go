package reflinkfs

// Extent maps and reference counts, read and changed through the running
// transaction. Every function here is called with fsys.mu held.
//
// Invariants:
//   - a file's extents never overlap; adjacent extents that are physically
//     contiguous with equal flags are merged on insert;
//   - the reference count of a physical block equals the number of extent
//     references to it; counts of 1 are implicit (no record), counts >= 2 are
//     'R' records, which never overlap and are merged when adjacent and equal;
//   - a block with count 0 is in free space (alloc), never in both.
//
// This is the extent-map interface a copy-on-write B-tree will replace (so
// that cloning a file is O(1) in its number of extents); callers use only
// extentsIn, unmapRange, mapRange and the refcount functions below.

import (
	"fmt"
	"syscall"

	"github.com/google/btree"
	"github.com/reflinkfs/reflinkfs/internal/alloc"
	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// mapping is a piece of an extent map: n blocks from file block lblk are at
// physical block pblk.
type mapping struct {
	lblk, pblk, n uint64
	unwritten     bool
}

func (m mapping) end() uint64 { return m.lblk + m.n }

func (m mapping) flags() uint8 {
	if m.unwritten {
		return meta.ExtentUnwritten
	}
	return 0
}

func decodeMapping(k, v []byte) (mapping, error) {
	_, lblk, err := meta.ParseKey2(meta.PrefixExtent, k)
	if err != nil {
		return mapping{}, err
	}
	e, err := meta.DecodeExtent(k, v)
	if err != nil {
		return mapping{}, err
	}
	return mapping{lblk: lblk, pblk: e.Pblk, n: e.Len, unwritten: e.Flags&meta.ExtentUnwritten != 0}, nil
}

// extentTree is a file's extent map in memory, ordered by file block. It
// is loaded from the store on first use and written through to the running
// transaction on every change, so lookups never read the store (whose
// tombstones would make repeated seeks slow within a transaction).
type extentTree = btree.BTreeG[mapping]

func newExtentTree() *extentTree {
	return btree.NewG(16, func(a, b mapping) bool { return a.lblk < b.lblk })
}

// extents returns in's extent map, loading it if needed.
func (fsys *FS) extents(in *inode) (*extentTree, error) {
	if in.ext != nil {
		return in.ext, nil
	}
	t := newExtentTree()
	lo := meta.InodePrefix(meta.PrefixExtent, in.ino)
	err := kv.Scan(fsys.txn, lo, meta.PrefixEnd(lo), func(k, v []byte) error {
		m, err := decodeMapping(k, v)
		if err != nil {
			return err
		}
		if m.pblk+m.n > fsys.sb.DeviceBlocks || m.pblk+m.n < m.pblk {
			return fmt.Errorf("inode %d: extent at block %d maps beyond the device (%d+%d)", in.ino, m.lblk, m.pblk, m.n)
		}
		t.ReplaceOrInsert(m)
		return nil
	})
	if err != nil {
		// A partial map would read holes where data is: EIO instead.
		fsys.log.Error("extent map unreadable", "inode", in.ino, "err", err)
		return nil, fmt.Errorf("%v: %w", err, syscall.EIO)
	}
	in.ext = t
	return t, nil
}

// rawExtentsIn returns in's extents overlapping [start, end), unclipped.
func (fsys *FS) rawExtentsIn(in *inode, start, end uint64) ([]mapping, error) {
	if start >= end {
		return nil, nil
	}
	t, err := fsys.extents(in)
	if err != nil {
		return nil, err
	}
	var out []mapping
	t.DescendLessOrEqual(mapping{lblk: start}, func(m mapping) bool {
		if m.end() > start {
			out = append(out, m)
		}
		return false
	})
	if len(out) == 1 && out[0].lblk == start {
		out = out[:0] // found again by the ascent below
	}
	t.AscendGreaterOrEqual(mapping{lblk: start}, func(m mapping) bool {
		if m.lblk >= end {
			return false
		}
		out = append(out, m)
		return true
	})
	return out, nil
}

// extentsIn returns ino's mappings inside [start, end), clipped to it.
func (fsys *FS) extentsIn(in *inode, start, end uint64) ([]mapping, error) {
	ms, err := fsys.rawExtentsIn(in, start, end)
	if err != nil {
		return nil, err
	}
	for i := range ms {
		ms[i] = clip(ms[i], start, end)
	}
	return ms, nil
}

func clip(m mapping, start, end uint64) mapping {
	if m.lblk < start {
		d := start - m.lblk
		m.lblk, m.pblk, m.n = start, m.pblk+d, m.n-d
	}
	if m.end() > end {
		m.n = end - m.lblk
	}
	return m
}

func (fsys *FS) putExtent(in *inode, m mapping) error {
	in.ext.ReplaceOrInsert(m)
	k := meta.ExtentKey(in.ino, m.lblk)
	e := meta.Extent{Pblk: m.pblk, Len: m.n, Flags: m.flags()}
	return fsys.txn.Set(k, e.Encode(k))
}

func (fsys *FS) deleteExtent(in *inode, lblk uint64) error {
	in.ext.Delete(mapping{lblk: lblk})
	return fsys.txn.Delete(meta.ExtentKey(in.ino, lblk))
}

// unmapRange removes in's mappings inside [start, end) and returns the
// removed pieces. It does not touch reference counts: see release.
func (fsys *FS) unmapRange(in *inode, start, end uint64) ([]mapping, error) {
	ms, err := fsys.rawExtentsIn(in, start, end)
	if err != nil {
		return nil, err
	}
	var removed []mapping
	for _, m := range ms {
		if err := fsys.deleteExtent(in, m.lblk); err != nil {
			return nil, err
		}
		if m.lblk < start {
			left := m
			left.n = start - m.lblk
			if err := fsys.putExtent(in, left); err != nil {
				return nil, err
			}
		}
		if m.end() > end {
			right := clip(m, end, m.end())
			if err := fsys.putExtent(in, right); err != nil {
				return nil, err
			}
		}
		c := clip(m, start, end)
		removed = append(removed, c)
		in.rec.Blocks -= c.n
		fsys.mappedBlocks -= int64(c.n)
	}
	return removed, nil
}

// mapRange maps m into in's extent map; [m.lblk, m.end()) must be unmapped.
// It merges with physically contiguous neighbours of the same kind.
func (fsys *FS) mapRange(in *inode, m mapping) error {
	if m.n == 0 {
		return nil
	}
	in.rec.Blocks += m.n
	fsys.mappedBlocks += int64(m.n)
	t, err := fsys.extents(in)
	if err != nil {
		return err
	}
	if m.lblk > 0 {
		if left, ok := t.Get(mapping{lblk: m.lblk}); ok {
			return fmt.Errorf("inode %d: mapping block %d which is mapped (%+v): %w", in.ino, m.lblk, left, syscall.EIO)
		}
		var left mapping
		found := false
		t.DescendLessOrEqual(mapping{lblk: m.lblk}, func(x mapping) bool { left, found = x, true; return false })
		if found && left.end() == m.lblk && left.pblk+left.n == m.pblk && left.unwritten == m.unwritten {
			if err := fsys.deleteExtent(in, left.lblk); err != nil {
				return err
			}
			m = mapping{lblk: left.lblk, pblk: left.pblk, n: left.n + m.n, unwritten: m.unwritten}
		}
	}
	if right, ok := t.Get(mapping{lblk: m.end()}); ok && right.pblk == m.pblk+m.n && right.unwritten == m.unwritten {
		if err := fsys.deleteExtent(in, right.lblk); err != nil {
			return err
		}
		m.n += right.n
	}
	return fsys.putExtent(in, m)
}

// refRun is a physical run with one reference count.
type refRun struct {
	start, n uint64
	count    uint32
}

func decodeRefRun(k, v []byte) (refRun, error) {
	start, err := meta.ParseKey1(meta.PrefixRefcount, k)
	if err != nil {
		return refRun{}, err
	}
	r, err := meta.DecodeRun(k, v)
	if err != nil {
		return refRun{}, err
	}
	if r.Count < 2 {
		return refRun{}, fmt.Errorf("%w: refcount record %d+%d with count %d", meta.ErrCorrupt, start, r.Len, r.Count)
	}
	return refRun{start, r.Len, r.Count}, nil
}

// refTree holds every refcount record (count >= 2) in memory, ordered by
// physical block; loaded at open and written through like extent maps.
type refTree = btree.BTreeG[refRun]

func newRefTree() *refTree {
	return btree.NewG(16, func(a, b refRun) bool { return a.start < b.start })
}

// rawRefRecords returns the refcount records overlapping [p, p+n), unclipped.
func (fsys *FS) rawRefRecords(p, n uint64) ([]refRun, error) {
	var out []refRun
	if n == 0 {
		return nil, nil
	}
	fsys.refs.DescendLessOrEqual(refRun{start: p}, func(r refRun) bool {
		if r.start < p && r.start+r.n > p {
			out = append(out, r)
		}
		return false
	})
	fsys.refs.AscendGreaterOrEqual(refRun{start: p}, func(r refRun) bool {
		if r.start >= p+n {
			return false
		}
		out = append(out, r)
		return true
	})
	return out, nil
}

// refRuns describes [p, p+n) as consecutive runs with their counts (gaps
// between records have count 1).
func (fsys *FS) refRuns(p, n uint64) ([]refRun, error) {
	recs, err := fsys.rawRefRecords(p, n)
	if err != nil {
		return nil, err
	}
	var out []refRun
	pos, end := p, p+n
	for _, r := range recs {
		rs, re := max(r.start, p), min(r.start+r.n, end)
		if rs > pos {
			out = append(out, refRun{pos, rs - pos, 1})
		}
		out = append(out, refRun{rs, re - rs, r.count})
		pos = re
	}
	if pos < end {
		out = append(out, refRun{pos, end - pos, 1})
	}
	return out, nil
}

func (fsys *FS) putRef(r refRun) error {
	fsys.refs.ReplaceOrInsert(r)
	k := meta.RefcountKey(r.start)
	v := meta.Run{Len: r.n, Count: r.count}
	return fsys.txn.Set(k, v.Encode(k))
}

func (fsys *FS) deleteRef(start uint64) error {
	fsys.refs.Delete(refRun{start: start})
	return fsys.txn.Delete(meta.RefcountKey(start))
}

// adjustRefs adds delta (+1 or -1) to the count of every block in [p, p+n)
// and returns the runs whose count reached zero.
func (fsys *FS) adjustRefs(p, n uint64, delta int) ([]alloc.Run, error) {
	if n == 0 {
		return nil, nil
	}
	recs, err := fsys.rawRefRecords(p, n)
	if err != nil {
		return nil, err
	}
	// Split records at the range boundaries.
	for _, r := range recs {
		if r.start < p || r.start+r.n > p+n {
			if err := fsys.deleteRef(r.start); err != nil {
				return nil, err
			}
			if r.start < p {
				if err := fsys.putRef(refRun{r.start, p - r.start, r.count}); err != nil {
					return nil, err
				}
			}
			if r.start+r.n > p+n {
				if err := fsys.putRef(refRun{p + n, r.start + r.n - (p + n), r.count}); err != nil {
					return nil, err
				}
			}
			ms, me := max(r.start, p), min(r.start+r.n, p+n)
			if err := fsys.putRef(refRun{ms, me - ms, r.count}); err != nil {
				return nil, err
			}
		}
	}
	runs, err := fsys.refRuns(p, n)
	if err != nil {
		return nil, err
	}
	var freed []alloc.Run
	for _, r := range runs {
		if r.count > 1 {
			if err := fsys.deleteRef(r.start); err != nil {
				return nil, err
			}
		}
		c := int(r.count) + delta
		switch {
		case c == 0:
			freed = append(freed, alloc.Run{Start: r.start, Len: r.n})
		case c == 1:
			fsys.sharedBlocks -= int64(r.n)
		case c >= 2:
			if r.count == 1 {
				fsys.sharedBlocks += int64(r.n)
			}
			if err := fsys.putRef(refRun{r.start, r.n, uint32(c)}); err != nil {
				return nil, err
			}
		}
	}
	return freed, fsys.mergeRefs(p, n)
}

// mergeRefs merges equal-count adjacent records around [p, p+n).
func (fsys *FS) mergeRefs(p, n uint64) error {
	lo := p
	if lo > 0 {
		lo--
	}
	recs, err := fsys.rawRefRecords(lo, p+n+1-lo)
	if err != nil {
		return err
	}
	for i := 1; i < len(recs); i++ {
		a, b := recs[i-1], recs[i]
		if a.start+a.n == b.start && a.count == b.count {
			if err := fsys.deleteRef(b.start); err != nil {
				return err
			}
			recs[i] = refRun{a.start, a.n + b.n, a.count}
			if err := fsys.putRef(recs[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// opState collects what an operation must do after it drops fs.mu: drop
// cache frames of blocks it freed.
type opState struct {
	freed []alloc.Run
}

// release drops one reference from every written or unwritten block of ms
// and frees the blocks whose count reaches zero.
func (fsys *FS) release(op *opState, ms []mapping) error {
	for _, m := range ms {
		freed, err := fsys.adjustRefs(m.pblk, m.n, -1)
		if err != nil {
			return err
		}
		for _, r := range freed {
			if err := fsys.alloc.Free(fsys.txn, r); err != nil {
				return err
			}
			op.freed = append(op.freed, r)
		}
	}
	return nil
}

// share adds one reference to every block of ms.
func (fsys *FS) share(ms []mapping) error {
	for _, m := range ms {
		if _, err := fsys.adjustRefs(m.pblk, m.n, +1); err != nil {
			return err
		}
	}
	return nil
}

// allocate allocates n blocks for file block lblk of in, near the block
// after the physical block mapping lblk-1, and marks them fresh.
func (fsys *FS) allocate(in *inode, lblk, n uint64) ([]alloc.Run, error) {
	hint := alloc.NoHint
	if lblk > 0 {
		if prev, err := fsys.rawExtentsIn(in, lblk-1, lblk); err == nil && len(prev) == 1 {
			m := clip(prev[0], lblk-1, lblk)
			hint = m.pblk + 1
		}
	}
	runs, err := fsys.alloc.Alloc(fsys.txn, n, hint)
	if err != nil {
		return nil, err
	}
	for _, r := range runs {
		fsys.fresh.ReplaceOrInsert(r)
	}
	return runs, nil
}

// remapNew gives file blocks [lblk, lblk+n) of in newly allocated blocks
// (written, or unwritten: preallocated, reading as zeros), releasing what
// they mapped before, and returns the new runs in file order. Space is
// allocated first, so ENOSPC leaves the file unchanged.
func (fsys *FS) remapNew(op *opState, in *inode, lblk, n uint64, unwritten bool) ([]alloc.Run, error) {
	runs, err := fsys.allocate(in, lblk, n)
	if err != nil {
		return nil, err
	}
	removed, err := fsys.unmapRange(in, lblk, lblk+n)
	if err != nil {
		return nil, err
	}
	if err := fsys.release(op, removed); err != nil {
		return nil, err
	}
	for _, r := range runs {
		if err := fsys.mapRange(in, mapping{lblk: lblk, pblk: r.Start, n: r.Len, unwritten: unwritten}); err != nil {
			return nil, err
		}
		lblk += r.Len
	}
	return runs, nil
}

// isFresh reports whether block p was allocated by the running transaction.
func (fsys *FS) isFresh(p uint64) bool {
	found := false
	fsys.fresh.DescendLessOrEqual(alloc.Run{Start: p}, func(r alloc.Run) bool {
		found = p < r.End()
		return false
	})
	return found
}

// finish drops the cache frames of blocks the operation freed and forgets
// their pending checksums. Called without fs.mu, with the gate still held so
// no commit can hand the blocks out again in between.
func (fsys *FS) finish(op *opState) {
	for _, r := range op.freed {
		fsys.crcMu.Lock()
		if len(fsys.pendingCRC) > 0 {
			for b := r.Start; b < r.End(); b++ {
				delete(fsys.pendingCRC, b)
			}
		}
		fsys.crcMu.Unlock()
		for b := r.Start; b < r.End(); b++ {
			fsys.cache.Invalidate(b)
		}
	}
}

func allocRun(start, n uint64) alloc.Run { return alloc.Run{Start: start, Len: n} }

type allocRunT = alloc.Run
