package reflinkfs

// Fsck recomputes every derived fact of the metadata from the primary
// records and compares: reference counts from the extent maps, free space
// as the complement of referenced space, link counts from directory
// entries, block counts from extents, and the reachability of every inode.

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"syscall"

	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// maxProblems bounds the report on a badly damaged image.
const maxProblems = 1000

type fsckState struct {
	rd     kv.Reader
	report *FsckReport
	sb     meta.Super
	inodes map[uint64]*meta.Inode
	// per-inode facts recomputed from other records
	links     map[uint64]uint32 // dirents naming the inode
	subdirs   map[uint64]uint32
	dirParent map[uint64]uint64
	blocks    map[uint64]uint64
	orphans   map[uint64]bool
	refs      []physRef
	written   []physRef
	checksums map[uint64]bool
}

type physRef struct{ start, n uint64 }

func (s *fsckState) problem(format string, args ...any) {
	if len(s.report.Problems) < maxProblems {
		s.report.Problems = append(s.report.Problems, fmt.Sprintf(format, args...))
	}
}

// Fsck checks every invariant of the image. It commits the running
// transaction first and holds off all other operations while it runs.
// Repair is not implemented yet: with repair set, problems are reported
// and nothing is changed.
func (fsys *FS) Fsck(repair bool) (*FsckReport, error) {
	if err := fsys.commit(); err != nil && !fsys.opt.ReadOnly {
		return nil, pathErr("fsck", fsys.dir, err)
	}
	fsys.gate.Lock()
	defer fsys.gate.Unlock()
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.closed {
		return nil, pathErr("fsck", fsys.dir, fs.ErrClosed)
	}
	r, err := checkStore(fsys.store)
	if err != nil {
		return nil, pathErr("fsck", fsys.dir, err)
	}
	// The in-memory state must agree with the records.
	if fsys.alloc.Quarantined() != 0 {
		r.Problems = append(r.Problems, "quarantine not empty after commit")
	}
	var shared, refRecords int64
	fsys.refs.Ascend(func(rr refRun) bool { shared += int64(rr.n); refRecords++; return true })
	if shared != fsys.sharedBlocks {
		r.Problems = append(r.Problems, fmt.Sprintf("shared-block counter is %d, refcount records cover %d", fsys.sharedBlocks, shared))
	}
	if shared != r.sharedBlocks {
		r.Problems = append(r.Problems, fmt.Sprintf("in-memory refcount records cover %d blocks, stored ones %d", shared, r.sharedBlocks))
	}
	if fsys.mappedBlocks != r.mappedBlocks {
		r.Problems = append(r.Problems, fmt.Sprintf("mapped-block counter is %d, extents map %d", fsys.mappedBlocks, r.mappedBlocks))
	}
	if free := int64(fsys.alloc.FreeBlocks()); free != r.freeBlocks {
		r.Problems = append(r.Problems, fmt.Sprintf("allocator has %d free blocks, free records %d", free, r.freeBlocks))
	}
	return r, nil
}

func checkStore(rd kv.Reader) (*FsckReport, error) {
	s := &fsckState{rd: rd, report: &FsckReport{},
		inodes: map[uint64]*meta.Inode{}, links: map[uint64]uint32{}, subdirs: map[uint64]uint32{},
		dirParent: map[uint64]uint64{}, blocks: map[uint64]uint64{}, orphans: map[uint64]bool{},
		checksums: map[uint64]bool{},
	}
	v, err := rd.Get(meta.SuperKey())
	if err != nil {
		return nil, fmt.Errorf("superblock: %w", err)
	}
	if s.sb, err = meta.DecodeSuper(v); err != nil {
		return nil, err
	}
	steps := []func() error{s.scanInodes, s.scanDirents, s.scanOrphans, s.scanExtents, s.scanChecksums, s.checkInodes, s.checkSpace}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	s.report.Inodes = int64(len(s.inodes))
	return s.report, nil
}

func (s *fsckState) scan(prefix byte, fn func(k, v []byte)) error {
	it := s.rd.NewIter([]byte{prefix}, []byte{prefix + 1})
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		fn(it.Key(), it.Value())
	}
	return nil
}

func (s *fsckState) scanInodes() error {
	return s.scan(meta.PrefixInode, func(k, v []byte) {
		ino, err := meta.ParseKey1(meta.PrefixInode, k)
		if err != nil {
			s.problem("bad inode key %x", k)
			return
		}
		rec, err := meta.DecodeInode(ino, v)
		if err != nil {
			s.problem("inode %d: %v", ino, err)
			return
		}
		if ino >= s.sb.NextIno {
			s.problem("inode %d is not below the next inode number %d", ino, s.sb.NextIno)
		}
		s.inodes[ino] = &rec
	})
}

func (s *fsckState) scanDirents() error {
	return s.scan(meta.PrefixDirent, func(k, v []byte) {
		parent, name, err := meta.ParseKeyName(meta.PrefixDirent, k)
		if err != nil {
			s.problem("bad dirent key %x", k)
			return
		}
		d, err := meta.DecodeDirent(k, v)
		if err != nil {
			s.problem("entry %q in directory %d: %v", name, parent, err)
			return
		}
		if p, ok := s.inodes[parent]; !ok || !isDir(p.Mode) {
			s.problem("entry %q is in %d, which is not a directory", name, parent)
		}
		child, ok := s.inodes[d.Ino]
		if !ok {
			s.problem("entry %q in directory %d names missing inode %d", name, parent, d.Ino)
			return
		}
		if child.Mode&syscall.S_IFMT != d.Type {
			s.problem("entry %q in directory %d has type %o, inode %d has %o", name, parent, d.Type, d.Ino, child.Mode&syscall.S_IFMT)
		}
		s.links[d.Ino]++
		if isDir(child.Mode) {
			s.subdirs[parent]++
			if prev, dup := s.dirParent[d.Ino]; dup {
				s.problem("directory %d has two entries (in %d and %d)", d.Ino, prev, parent)
			}
			s.dirParent[d.Ino] = parent
		}
	})
}

func (s *fsckState) scanOrphans() error {
	return s.scan(meta.PrefixOrphan, func(k, v []byte) {
		ino, err := meta.ParseKey1(meta.PrefixOrphan, k)
		if err != nil {
			s.problem("bad orphan key %x", k)
			return
		}
		s.orphans[ino] = true
	})
}

func (s *fsckState) scanExtents() error {
	var lastIno, lastEnd uint64
	return s.scan(meta.PrefixExtent, func(k, v []byte) {
		ino, lblk, err := meta.ParseKey2(meta.PrefixExtent, k)
		if err != nil {
			s.problem("bad extent key %x", k)
			return
		}
		e, err := meta.DecodeExtent(k, v)
		if err != nil {
			s.problem("inode %d extent at block %d: %v", ino, lblk, err)
			return
		}
		in, ok := s.inodes[ino]
		if !ok {
			s.problem("extent at block %d of missing inode %d", lblk, ino)
		} else if !isReg(in.Mode) {
			s.problem("inode %d is not a regular file but has extents", ino)
		}
		if ino == lastIno && lblk < lastEnd {
			s.problem("inode %d: extent at block %d overlaps the previous one", ino, lblk)
		}
		lastIno, lastEnd = ino, lblk+e.Len
		if e.Pblk+e.Len > s.sb.DeviceBlocks || e.Pblk+e.Len < e.Pblk {
			s.problem("inode %d: extent at block %d maps %d+%d, beyond the device", ino, lblk, e.Pblk, e.Len)
			return
		}
		s.blocks[ino] += e.Len
		s.report.Extents++
		s.report.mappedBlocks += int64(e.Len)
		s.refs = append(s.refs, physRef{e.Pblk, e.Len})
		if e.Flags&meta.ExtentUnwritten == 0 {
			s.written = append(s.written, physRef{e.Pblk, e.Len})
		}
	})
}

func (s *fsckState) scanChecksums() error {
	return s.scan(meta.PrefixChecksum, func(k, v []byte) {
		b, err := meta.ParseKey1(meta.PrefixChecksum, k)
		if err != nil {
			s.problem("bad checksum key %x", k)
			return
		}
		if _, err := meta.DecodeU32(k, v); err != nil {
			s.problem("checksum of block %d: %v", b, err)
			return
		}
		s.checksums[b] = true
	})
}

func (s *fsckState) checkInodes() error {
	root, ok := s.inodes[RootIno]
	if !ok || !isDir(root.Mode) {
		s.problem("root directory is missing")
	}
	for ino, in := range s.inodes {
		if s.blocks[ino] != in.Blocks {
			s.problem("inode %d records %d blocks, its extents map %d", ino, in.Blocks, s.blocks[ino])
		}
		if isDir(in.Mode) {
			if ino != RootIno {
				parent, ok := s.dirParent[ino]
				if !ok {
					s.problem("directory %d has no entry in any directory", ino)
				} else if parent != in.Parent {
					s.problem("directory %d records parent %d, its entry is in %d", ino, in.Parent, parent)
				}
			}
			if want := 2 + s.subdirs[ino]; in.Nlink != want {
				s.problem("directory %d has link count %d, expected %d", ino, in.Nlink, want)
			}
			continue
		}
		if in.Nlink != s.links[ino] {
			s.problem("inode %d has link count %d, but %d entries name it", ino, in.Nlink, s.links[ino])
		}
		if s.links[ino] == 0 && !s.orphans[ino] {
			s.problem("inode %d is not in any directory and not an orphan (leaked)", ino)
		}
		if in.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			k := meta.SymlinkKey(ino)
			if v, err := s.rd.Get(k); err != nil {
				s.problem("symlink %d has no target", ino)
			} else if _, err := meta.DecodeBytes(k, v); err != nil {
				s.problem("symlink %d: %v", ino, err)
			}
		}
	}
	for ino := range s.orphans {
		if in, ok := s.inodes[ino]; ok && in.Nlink != 0 {
			s.problem("orphan %d still has %d links", ino, in.Nlink)
		}
	}
	// Every directory's parent chain reaches the root.
	for ino, in := range s.inodes {
		if !isDir(in.Mode) {
			continue
		}
		cur := ino
		for i := 0; cur != RootIno; i++ {
			p, ok := s.dirParent[cur]
			if !ok || i > len(s.inodes) {
				s.problem("directory %d is not connected to the root", ino)
				break
			}
			cur = p
		}
	}
	return nil
}

// checkSpace compares reference counts, free space and checksums with the
// counts recomputed from the extents.
func (s *fsckState) checkSpace() error {
	type event struct {
		at    uint64
		delta int
	}
	ev := make([]event, 0, 2*len(s.refs))
	for _, r := range s.refs {
		ev = append(ev, event{r.start, +1}, event{r.start + r.n, -1})
	}
	sort.Slice(ev, func(i, j int) bool { return ev[i].at < ev[j].at })
	// segments with their recomputed count, covering the whole device
	type seg struct {
		start, end uint64
		count      int
	}
	var segs []seg
	pos, count := uint64(0), 0
	for _, e := range ev {
		if e.at > pos {
			segs = append(segs, seg{pos, e.at, count})
			pos = e.at
		}
		count += e.delta
	}
	if pos < s.sb.DeviceBlocks {
		segs = append(segs, seg{pos, s.sb.DeviceBlocks, 0})
	}
	// Stored counts: R records (>= 2), F records (0), else 1.
	type rec struct {
		start, end uint64
		count      int
	}
	var recs []rec
	s.scan(meta.PrefixRefcount, func(k, v []byte) {
		b, err := meta.ParseKey1(meta.PrefixRefcount, k)
		if err != nil {
			s.problem("bad refcount key %x", k)
			return
		}
		r, err := meta.DecodeRun(k, v)
		if err != nil {
			s.problem("refcount at block %d: %v", b, err)
			return
		}
		if r.Count < 2 {
			s.problem("refcount record at block %d has count %d (< 2)", b, r.Count)
		}
		recs = append(recs, rec{b, b + r.Len, int(r.Count)})
		s.report.sharedBlocks += int64(r.Len)
	})
	s.scan(meta.PrefixFree, func(k, v []byte) {
		b, err := meta.ParseKey1(meta.PrefixFree, k)
		if err != nil {
			s.problem("bad free key %x", k)
			return
		}
		r, err := meta.DecodeRun(k, v)
		if err != nil {
			s.problem("free run at block %d: %v", b, err)
			return
		}
		recs = append(recs, rec{b, b + r.Len, 0})
		s.report.freeBlocks += int64(r.Len)
	})
	sort.Slice(recs, func(i, j int) bool { return recs[i].start < recs[j].start })
	for i := 1; i < len(recs); i++ {
		if recs[i].start < recs[i-1].end {
			s.problem("space records overlap at block %d (counts %d and %d)", recs[i].start, recs[i-1].count, recs[i].count)
		}
	}
	storedAt := func(b uint64) (int, uint64) { // count at b and where that answer ends
		i := sort.Search(len(recs), func(i int) bool { return recs[i].end > b })
		if i < len(recs) && recs[i].start <= b {
			return recs[i].count, recs[i].end
		}
		if i < len(recs) {
			return 1, recs[i].start
		}
		return 1, ^uint64(0)
	}
	reported := 0
	for _, sg := range segs {
		for b := sg.start; b < sg.end; {
			c, end := storedAt(b)
			end = min(end, sg.end)
			if c != sg.count && reported < 100 {
				reported++
				switch {
				case sg.count == 0 && c == 1:
					s.problem("blocks %d+%d are neither referenced nor free (leaked)", b, end-b)
				case sg.count > 0 && c == 0:
					s.problem("blocks %d+%d are referenced %d times but marked free", b, end-b, sg.count)
				default:
					s.problem("blocks %d+%d have reference count %d, extents reference them %d times", b, end-b, c, sg.count)
				}
			}
			b = end
		}
	}
	// Checksums: every written referenced block has one, nothing else does.
	written := map[uint64]bool{}
	for _, w := range s.written {
		for b := w.start; b < w.start+w.n; b++ {
			written[b] = true
			if !s.checksums[b] && reported < 200 {
				reported++
				s.problem("written block %d has no checksum", b)
			}
		}
	}
	// Checksum records of free blocks are allowed: they are left behind at
	// free time (deleting them would cost a write per block) and replaced
	// when the block is written again, before anything can read it.
	return nil
}

var _ = errors.New
