package reflinkfs

// Fsck recomputes every derived fact of the metadata from the primary
// records and compares: reference counts from the extent maps, free space
// as the complement of referenced space, link counts from directory
// entries, block counts from extents, and the reachability of every inode.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/alloc"
	"github.com/reflinkfs/reflinkfs/internal/device"
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

	progress func(phase string, done int64)

	maxIno, maxGen uint64
	fixNextIno     bool

	// Repairs found safe, applied by Fsck(true).
	deleteKeys  [][]byte
	dirtyInodes map[uint64]bool
	putKeys     map[string][]byte
	lostFound   []uint64 // inodes to reconnect under /lost+found
	spaceBad    bool     // refcount/free records need rebuilding from extents
	newRoot     bool     // the root directory is recreated
	noChecksum  []uint64 // written blocks whose checksum record is missing
	lostData    []uint64 // files with fewer blocks mapped than recorded
	// lost are the key ranges of the store that could not be read (damaged
	// tables or blocks); repair salvages the rest into a new store.
	lost         []kv.KeyRange
	lostProblems []string // the problems that report them
	// direntKey is the key of the entry naming each directory.
	direntKey map[uint64][]byte
}

func (s *fsckState) dropKey(k []byte) {
	s.deleteKeys = append(s.deleteKeys, append([]byte(nil), k...))
}

func (s *fsckState) setInode(ino uint64) { s.dirtyInodes[ino] = true }

// repairable reports whether repair has records to fix (salvage of lost
// ranges is decided apart).
func (s *fsckState) repairable() bool {
	return len(s.deleteKeys)+len(s.dirtyInodes)+len(s.putKeys)+len(s.lostFound)+len(s.noChecksum) > 0 ||
		s.spaceBad || s.fixNextIno
}

type physRef struct {
	start, n  uint64
	ino, lblk uint64 // one owner, for reports
}

// problem records a problem repair can fix.
func (s *fsckState) problem(format string, args ...any) {
	if len(s.report.Problems) < maxProblems {
		s.report.Problems = append(s.report.Problems, fmt.Sprintf(format, args...))
	}
}

// unrepairable records a problem repair cannot fix (damaged file data).
func (s *fsckState) unrepairable(format string, args ...any) {
	if len(s.report.Problems) < maxProblems {
		msg := fmt.Sprintf(format, args...)
		s.report.Problems = append(s.report.Problems, msg)
		s.report.Unrepairable = append(s.report.Unrepairable, msg)
	}
}

// Fsck checks every invariant of the image. It commits the running
// transaction first and holds off all other operations while it runs.
//
// With repair, it fixes what can be fixed without guessing: reference counts
// and free space are rebuilt from the extent maps (leaked blocks are freed,
// wrong counts corrected), block counts, link counts and directory parents
// are recomputed, undecodable records and entries naming missing inodes are
// removed, and inodes no entry names are reconnected under /lost+found. The
// report's Repaired lists what changed; Problems lists what was left.
func (fsys *FS) Fsck(repair bool) (*FsckReport, error) {
	return fsys.Check(CheckOptions{Repair: repair})
}

// CheckOptions configure Check.
type CheckOptions struct {
	Repair bool
	// Progress, if set, is called as records are scanned: the phase name
	// ("inodes", "entries", "extents", "checksums", "space", "data") and
	// the records (for "data": blocks) scanned so far in it.
	Progress func(phase string, done int64)
	// SkipData skips reading every written block to verify its checksum.
	SkipData bool
}

// Check is Fsck with options.
func (fsys *FS) Check(opt CheckOptions) (*FsckReport, error) {
	repair := opt.Repair
	// Commit and check with the gate held throughout: an operation slipping
	// in between (the background reaper, a writer) would leave the in-memory
	// state the check compares with the store ahead of it.
	fsys.gate.Lock()
	defer fsys.gate.Unlock()
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.closed {
		return nil, pathErr("fsck", fsys.dir, fs.ErrClosed)
	}
	if err := fsys.commitLocked(); err != nil && !fsys.opt.ReadOnly {
		return nil, pathErr("fsck", fsys.dir, err)
	}
	s, err := fsys.checkAll(opt)
	if err != nil {
		return nil, pathErr("fsck", fsys.dir, err)
	}
	if repair && !fsys.opt.ReadOnly && (len(s.lost) > 0 || fsys.needsRepair(s)) {
		var repaired []string
		if len(s.lost) > 0 && fsys.opt.Recovery {
			// Parts of the store cannot be read: copy what can into a new
			// store first, then repair references in it as in any image.
			// (Only on an image opened for fsck: swapping the store under
			// a live one would fail its readers.)
			done, err := fsys.salvageStore(s.lost)
			if err != nil {
				return nil, pathErr("fsck salvage", fsys.dir, err)
			}
			repaired = append(repaired, done...)
			if s, err = fsys.checkAll(opt); err != nil {
				return nil, pathErr("fsck", fsys.dir, err)
			}
		}
		// One pass can uncover more (an inode removed leaves entries naming
		// it): repeat while there is something to fix, a few times at most.
		for pass := 0; pass < 4 && fsys.needsRepair(s); pass++ {
			done, err := fsys.repair(s)
			if err != nil {
				return nil, pathErr("fsck repair", fsys.dir, err)
			}
			repaired = append(repaired, done...)
			if s, err = fsys.checkAll(opt); err != nil {
				return nil, pathErr("fsck", fsys.dir, err)
			}
		}
		s.report.Repaired = repaired
	}
	r := s.report
	if len(s.lost) > 0 {
		// What follows from records that cannot be read (counts that do not
		// match, entries naming inodes not read) is noise until a salvage.
		r.Problems = append(append(s.lostProblems, r.Unrepairable...),
			fmt.Sprintf("and %d more problems that follow from the records that cannot be read; repair salvages the readable ones and fixes them", len(r.Problems)-len(s.lostProblems)-len(r.Unrepairable)))
		return r, nil
	}
	// The in-memory state must agree with the records.
	if fsys.alloc.Quarantined() != 0 {
		r.Problems = append(r.Problems, "quarantine not empty after commit")
	}
	var shared int64
	fsys.refs.Ascend(func(rr refRun) bool { shared += int64(rr.n); return true })
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

// checkAll checks the store, the data (unless opt.SkipData) and what open
// found wrong outside the store (superblock, device label).
func (fsys *FS) checkAll(opt CheckOptions) (*fsckState, error) {
	var sbOverride *meta.Super
	if fsys.sbRebuilt {
		sbOverride = &fsys.sb
	}
	s, err := checkStoreWith(fsys.store, opt.Progress, sbOverride)
	if err != nil {
		return nil, err
	}
	if !opt.SkipData {
		fsys.checkData(s, opt.Progress)
	}
	if fsys.sbRebuilt {
		s.problem("the superblock was damaged; rebuilt from the other records (device of %d blocks, next inode %d)", fsys.sb.DeviceBlocks, fsys.sb.NextIno)
	}
	if fsys.labelAhead > 0 {
		s.problem("the metadata store holds commit %d but commit %d was made durable: changes of the commits in between are lost (damaged write-ahead log)", fsys.sb.CommitSeq, fsys.labelAhead)
	}
	if fsys.labelDamaged != nil {
		s.problem("the device label (block 0 of the data file) is damaged, so lost commits cannot be detected: %v", fsys.labelDamaged)
	}
	return s, nil
}

// needsRepair reports whether repair has something to fix (besides a
// salvage of lost ranges).
func (fsys *FS) needsRepair(s *fsckState) bool {
	return s.repairable() || fsys.sbRebuilt || fsys.labelAhead > 0 || fsys.labelDamaged != nil
}

// repair applies the fixes s found, then rebuilds space records if needed,
// each step in its own durable transaction, and reloads the in-memory state.
// Called with the gate held exclusively and fs.mu held.
func (fsys *FS) repair(s *fsckState) ([]string, error) {
	var done []string
	txn := fsys.store.NewTxn()
	if s.fixNextIno || fsys.sbRebuilt {
		fsys.sb.NextIno = max(fsys.sb.NextIno, s.maxIno+1)
		fsys.sb.NextGen = max(fsys.sb.NextGen, s.maxGen+1)
		if err := txn.Set(meta.SuperKey(), fsys.sb.Encode()); err != nil {
			return nil, err
		}
		fsys.sbRebuilt = false
		done = append(done, fmt.Sprintf("rewrote the superblock (next inode %d)", fsys.sb.NextIno))
	}
	for _, k := range s.deleteKeys {
		if err := txn.Delete(k); err != nil {
			return nil, err
		}
	}
	if n := len(s.deleteKeys); n > 0 {
		done = append(done, fmt.Sprintf("removed %d damaged or dangling records", n))
	}
	for k, v := range s.putKeys {
		if err := txn.Set([]byte(k), v); err != nil {
			return nil, err
		}
		done = append(done, fmt.Sprintf("rewrote record %x", k))
	}
	if len(s.lostFound) > 0 {
		lf, err := fsys.lostAndFound(s, txn)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, ino := range s.lostFound {
			in := s.inodes[ino]
			name := fmt.Sprintf("#%d", ino)
			names = append(names, name)
			k := meta.DirentKey(lf, name)
			d := meta.Dirent{Ino: ino, Type: in.Mode & syscall.S_IFMT}
			if err := txn.Set(k, d.Encode(k)); err != nil {
				return nil, err
			}
			if isDir(in.Mode) {
				in.Parent = lf
				s.inodes[lf].Nlink++ // its ".." names lost+found
				s.setInode(lf)
			} else {
				in.Nlink = 1
			}
			s.setInode(ino)
		}
		if len(names) > 10 {
			names = append(names[:10], "...")
		}
		done = append(done, fmt.Sprintf("reconnected %d inodes no entry named under /lost+found, named by inode number: %s", len(s.lostFound), strings.Join(names, " ")))
	}
	if s.newRoot {
		done = append(done, "recreated the root directory")
	}
	for ino := range s.dirtyInodes {
		if err := txn.Set(meta.InodeKey(ino), s.inodes[ino].Encode(ino)); err != nil {
			return nil, err
		}
	}
	if n := len(s.dirtyInodes); n > 0 {
		done = append(done, fmt.Sprintf("corrected counts or parents of %d inodes", n))
	}
	if n := len(s.lostData); n > 0 {
		slices.Sort(s.lostData)
		inos := fmt.Sprint(s.lostData[:min(n, 20)])
		if n > 20 {
			inos = inos[:len(inos)-1] + " ...]"
		}
		done = append(done, fmt.Sprintf("%d files map fewer blocks than they recorded (extent records lost): they read zeros where those blocks were; inodes %s", n, inos))
	}
	if fsys.labelAhead > 0 {
		// Accept the loss: number commits on from the device's record.
		fsys.sb.CommitSeq = fsys.labelAhead
		fsys.labelAhead = 0
		if err := txn.Set(meta.SuperKey(), fsys.sb.Encode()); err != nil {
			return nil, err
		}
		done = append(done, fmt.Sprintf("accepted the loss of commits up to %d", fsys.sb.CommitSeq))
	}
	if err := fsys.store.Commit(txn, true); err != nil {
		return nil, err
	}
	if n := len(s.noChecksum); n > 0 {
		if err := fsys.recomputeChecksums(s.noChecksum); err != nil {
			return nil, err
		}
		done = append(done, fmt.Sprintf("recomputed the missing checksums of %d data blocks from their contents (which could not be verified)", n))
	}
	if fsys.labelDamaged != nil {
		if err := fsys.writeLabel(fsys.sb.CommitSeq); err != nil {
			return nil, err
		}
		if err := fsys.dev.Flush(); err != nil {
			return nil, err
		}
		fsys.labelDamaged = nil
		done = append(done, fmt.Sprintf("rewrote the device label (commit %d)", fsys.sb.CommitSeq))
	}
	// Space: with the extent maps now consistent, rebuild refcount and free
	// records from them.
	s2, err := checkStore(fsys.store, nil)
	if err != nil {
		return nil, err
	}
	if s.spaceBad || s2.spaceBad {
		if err := fsys.rebuildSpace(s2); err != nil {
			return nil, err
		}
		done = append(done, "rebuilt reference counts and free space from the extent maps")
	}
	return done, fsys.reloadState()
}

// recomputeChecksums writes checksum records for blocks from what the
// device holds now.
func (fsys *FS) recomputeChecksums(blocks []uint64) error {
	buf := device.AlignedBuffer(BlockSize)
	crcs := make(map[uint64]uint32, len(blocks))
	for _, b := range blocks {
		if err := fsys.dev.ReadBlocks([][]byte{buf}, int64(b)*BlockSize); err != nil {
			return fmt.Errorf("reading block %d: %w", b, err)
		}
		crcs[b] = meta.Checksum(buf)
	}
	batch := fsys.store.NewBatch()
	if err := fsys.commitChecksums(batch, crcs); err != nil {
		return err
	}
	return fsys.store.CommitBatch(batch, true)
}

// lostAndFound returns the inode of /lost+found, creating it in txn.
func (fsys *FS) lostAndFound(s *fsckState, txn kv.Txn) (uint64, error) {
	k := meta.DirentKey(RootIno, "lost+found")
	if v, err := fsys.store.Get(k); err == nil {
		if d, err := meta.DecodeDirent(k, v); err == nil && d.Type == syscall.S_IFDIR {
			return d.Ino, nil
		}
		return 0, fmt.Errorf("/lost+found exists and is not a directory")
	}
	ino := fsys.sb.NextIno
	fsys.sb.NextIno++
	gen := fsys.sb.NextGen
	fsys.sb.NextGen++
	now := time.Now().UnixNano()
	rec := meta.Inode{Gen: gen, Mode: syscall.S_IFDIR | 0o700, Nlink: 2, Parent: RootIno, Atime: now, Mtime: now, Ctime: now, Btime: now}
	root := s.inodes[RootIno]
	root.Nlink++
	s.setInode(RootIno)
	s.inodes[ino] = &rec
	s.setInode(ino)
	d := meta.Dirent{Ino: ino, Type: syscall.S_IFDIR}
	return ino, errors.Join(txn.Set(k, d.Encode(k)), txn.Set(meta.SuperKey(), fsys.sb.Encode()))
}

// rebuildSpace rewrites every refcount and free record from the counts
// recomputed from the extent maps.
func (fsys *FS) rebuildSpace(s *fsckState) error {
	txn := fsys.store.NewTxn()
	for _, p := range []byte{meta.PrefixRefcount, meta.PrefixFree} {
		if err := txn.DeleteRange([]byte{p}, []byte{p + 1}); err != nil {
			return err
		}
	}
	for _, sg := range s.segments() {
		switch {
		case sg.count == 0:
			k := meta.FreeKey(sg.start)
			v := meta.Run{Len: sg.end - sg.start}
			if err := txn.Set(k, v.Encode(k)); err != nil {
				return err
			}
		case sg.count >= 2:
			k := meta.RefcountKey(sg.start)
			v := meta.Run{Len: sg.end - sg.start, Count: uint32(sg.count)}
			if err := txn.Set(k, v.Encode(k)); err != nil {
				return err
			}
		}
	}
	return fsys.store.Commit(txn, true)
}

// reloadState rebuilds the in-memory allocator, refcounts, counters and
// inode table from the store after a repair.
func (fsys *FS) reloadState() error {
	a, err := alloc.Load(fsys.store, fsys.sb.DeviceBlocks)
	if err != nil {
		return err
	}
	fsys.alloc = a
	fsys.refs = newRefTree()
	fsys.mappedBlocks, fsys.sharedBlocks, fsys.inodeCount = 0, 0, 0
	for ino, in := range fsys.inodes {
		in.ext = nil // reloaded on use
		if v, err := fsys.store.Get(meta.InodeKey(ino)); err == nil {
			if rec, err := meta.DecodeInode(ino, v); err == nil {
				in.rec = rec
			}
		}
	}
	fsys.txn = fsys.store.NewTxn()
	return fsys.loadCounters()
}

func checkStore(rd kv.Reader, progress func(string, int64)) (*fsckState, error) {
	return checkStoreWith(rd, progress, nil)
}

// checkStoreWith checks the store; sb, if set, replaces a damaged superblock.
func checkStoreWith(rd kv.Reader, progress func(string, int64), sb *meta.Super) (*fsckState, error) {
	s := &fsckState{rd: rd, report: &FsckReport{}, progress: progress,
		inodes: map[uint64]*meta.Inode{}, links: map[uint64]uint32{}, subdirs: map[uint64]uint32{},
		dirParent: map[uint64]uint64{}, blocks: map[uint64]uint64{}, orphans: map[uint64]bool{},
		checksums: map[uint64]bool{}, dirtyInodes: map[uint64]bool{}, putKeys: map[string][]byte{},
		direntKey: map[uint64][]byte{},
	}
	if sb != nil {
		s.sb = *sb
	} else {
		v, err := rd.Get(meta.SuperKey())
		if err != nil {
			return nil, fmt.Errorf("superblock: %w", err)
		}
		if s.sb, err = meta.DecodeSuper(v); err != nil {
			return nil, err
		}
	}
	steps := []func() error{s.scanInodes, s.checkRoot, s.scanDirents, s.scanOrphans, s.scanExtents, s.scanChecksums,
		s.scanXattrs, s.scanSymlinks, s.checkInodes, s.checkSpace}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	s.report.Inodes = int64(len(s.inodes))
	return s, nil
}

// phaseNames names the progress phase of each kind of record scanned.
var phaseNames = map[byte]string{
	meta.PrefixInode: "inodes", meta.PrefixDirent: "entries", meta.PrefixOrphan: "orphans",
	meta.PrefixExtent: "extents", meta.PrefixChecksum: "checksums", meta.PrefixRefcount: "space",
	meta.PrefixFree: "space", meta.PrefixXattr: "xattrs", meta.PrefixSymlink: "symlinks",
}

// scan calls fn for every readable record of a kind. Key ranges the store
// cannot read are problems (repair salvages around them), never taken for
// the end of the records.
func (s *fsckState) scan(prefix byte, fn func(k, v []byte)) error {
	n := int64(0)
	lost, err := kv.ScanReadable(s.rd, []byte{prefix}, []byte{prefix + 1}, func(k, v []byte) error {
		fn(k, v)
		if n++; s.progress != nil && n%16384 == 0 {
			s.progress(phaseNames[prefix], n)
		}
		return nil
	})
	for _, r := range lost {
		msg := fmt.Sprintf("metadata store: the records %s cannot be read: %v", describeKeyRange(r), oneLine(r.Err))
		s.problem("%s", msg)
		s.lost = append(s.lost, r)
		s.lostProblems = append(s.lostProblems, msg)
	}
	if s.progress != nil {
		s.progress(phaseNames[prefix], n)
	}
	return err
}

// recordKinds names the records of each key prefix, and what the number
// after the prefix counts.
var recordKinds = map[byte][2]string{
	meta.PrefixSuper: {"the superblock", ""}, meta.PrefixInode: {"inode records", "inode"},
	meta.PrefixDirent: {"directory entries", "directory"}, meta.PrefixOrphan: {"orphan records", "inode"},
	meta.PrefixExtent: {"extent records", "inode"}, meta.PrefixChecksum: {"checksum records", "group"},
	meta.PrefixRefcount: {"reference counts", "block"}, meta.PrefixFree: {"free-space records", "block"},
	meta.PrefixXattr: {"extended attributes", "inode"}, meta.PrefixSymlink: {"symlink targets", "inode"},
}

// describeKeyRange says which records an unreadable key range held, for
// people: "from inode records of inode 12 to directory entries of
// directory 3".
func describeKeyRange(r kv.KeyRange) string {
	from := "from the first record"
	if len(r.Start) > 0 {
		from = "from " + describeKey(r.Start)
	}
	to := "to the last record"
	if len(r.End) > 0 {
		to = "to " + describeKey(r.End)
	}
	return from + " " + to
}

// describeKey names the record a key is (or would be).
func describeKey(k []byte) string {
	kind, ok := recordKinds[k[0]]
	switch {
	case !ok:
		return fmt.Sprintf("key %x", k)
	case kind[1] == "":
		return kind[0]
	}
	var b [8]byte
	copy(b[:], k[1:])
	return fmt.Sprintf("%s of %s %d", kind[0], kind[1], binary.BigEndian.Uint64(b[:]))
}

func (s *fsckState) scanInodes() error {
	return s.scan(meta.PrefixInode, func(k, v []byte) {
		ino, err := meta.ParseKey1(meta.PrefixInode, k)
		if err != nil {
			s.problem("bad inode key %x", k)
			s.dropKey(k)
			return
		}
		rec, err := meta.DecodeInode(ino, v)
		if err != nil {
			// Removed: its entries, extents and attributes go with it.
			s.problem("inode %d: %v", ino, err)
			s.dropKey(k)
			return
		}
		if ino >= s.sb.NextIno {
			s.problem("inode %d is not below the next inode number %d", ino, s.sb.NextIno)
			s.fixNextIno = true
		}
		s.maxIno = max(s.maxIno, ino)
		s.maxGen = max(s.maxGen, rec.Gen)
		s.inodes[ino] = &rec
	})
}

// checkRoot recreates a missing root directory (in the state, so that the
// entries in it are kept; repair writes it).
func (s *fsckState) checkRoot() error {
	if root, ok := s.inodes[RootIno]; ok && isDir(root.Mode) {
		return nil
	}
	s.problem("root directory is missing")
	now := time.Now().UnixNano()
	s.inodes[RootIno] = &meta.Inode{Gen: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Parent: RootIno,
		Atime: now, Mtime: now, Ctime: now, Btime: now}
	s.setInode(RootIno)
	s.newRoot = true
	return nil
}

func (s *fsckState) scanDirents() error {
	return s.scan(meta.PrefixDirent, func(k, v []byte) {
		parent, name, err := meta.ParseKeyName(meta.PrefixDirent, k)
		if err != nil {
			s.problem("bad dirent key %x", k)
			s.dropKey(k)
			return
		}
		d, err := meta.DecodeDirent(k, v)
		if err != nil {
			s.problem("entry %q in directory %d: %v", name, parent, err)
			s.dropKey(k)
			return
		}
		if p, ok := s.inodes[parent]; !ok || !isDir(p.Mode) {
			s.problem("entry %q is in %d, which is not a directory", name, parent)
			s.dropKey(k)
			return
		}
		child, ok := s.inodes[d.Ino]
		if !ok {
			s.problem("entry %q in directory %d names missing inode %d", name, parent, d.Ino)
			s.dropKey(k)
			return
		}
		if child.Mode&syscall.S_IFMT != d.Type {
			s.problem("entry %q in directory %d has type %o, inode %d has %o", name, parent, d.Type, d.Ino, child.Mode&syscall.S_IFMT)
			fixed := meta.Dirent{Ino: d.Ino, Type: child.Mode & syscall.S_IFMT}
			s.putKeys[string(k)] = fixed.Encode(k)
		}
		s.links[d.Ino]++
		if isDir(child.Mode) {
			if prev, dup := s.dirParent[d.Ino]; dup {
				s.problem("directory %d has two entries (in %d and %d)", d.Ino, prev, parent)
				s.links[d.Ino]--
				s.dropKey(k) // keep the first
				return
			}
			s.subdirs[parent]++
			s.dirParent[d.Ino] = parent
			s.direntKey[d.Ino] = append([]byte(nil), k...)
		}
	})
}

func (s *fsckState) scanOrphans() error {
	return s.scan(meta.PrefixOrphan, func(k, v []byte) {
		ino, err := meta.ParseKey1(meta.PrefixOrphan, k)
		if err != nil {
			s.problem("bad orphan key %x", k)
			s.dropKey(k)
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
			s.dropKey(k)
			return
		}
		e, err := meta.DecodeExtent(k, v)
		if err != nil {
			s.problem("inode %d extent at block %d: %v", ino, lblk, err)
			s.dropKey(k)
			return
		}
		drop := func(format string, args ...any) {
			s.problem(format, args...)
			s.dropKey(k)
		}
		in, ok := s.inodes[ino]
		switch {
		case !ok:
			drop("extent at block %d of missing inode %d", lblk, ino)
			return
		case !isReg(in.Mode):
			drop("inode %d is not a regular file but has extents", ino)
			return
		case ino == lastIno && lblk < lastEnd:
			drop("inode %d: extent at block %d overlaps the previous one", ino, lblk)
			return
		case e.Pblk+e.Len > s.sb.DeviceBlocks || e.Pblk+e.Len < e.Pblk:
			drop("inode %d: extent at block %d maps %d+%d, beyond the device", ino, lblk, e.Pblk, e.Len)
			return
		}
		lastIno, lastEnd = ino, lblk+e.Len
		s.blocks[ino] += e.Len
		s.report.Extents++
		s.report.mappedBlocks += int64(e.Len)
		s.refs = append(s.refs, physRef{e.Pblk, e.Len, ino, lblk})
		if e.Flags&meta.ExtentUnwritten == 0 {
			s.written = append(s.written, physRef{e.Pblk, e.Len, ino, lblk})
		}
	})
}

func (s *fsckState) scanChecksums() error {
	return s.scan(meta.PrefixChecksum, func(k, v []byte) {
		g, err := meta.ParseKey1(meta.PrefixChecksum, k)
		if err != nil {
			s.problem("bad checksum key %x", k)
			s.dropKey(k)
			return
		}
		grp, err := meta.DecodeChecksumGroup(k, v)
		if err != nil {
			s.problem("checksums of blocks %d+%d: %v", g*meta.GroupBlocks, meta.GroupBlocks, err)
			s.dropKey(k)
			return
		}
		for slot := uint64(0); slot < meta.GroupBlocks; slot++ {
			if grp.Present&(1<<slot) != 0 {
				s.checksums[g*meta.GroupBlocks+slot] = true
			}
		}
	})
}

func (s *fsckState) scanXattrs() error {
	return s.scan(meta.PrefixXattr, func(k, v []byte) {
		ino, name, err := meta.ParseKeyName(meta.PrefixXattr, k)
		if err != nil {
			s.problem("bad xattr key %x", k)
			s.dropKey(k)
			return
		}
		if _, ok := s.inodes[ino]; !ok {
			s.problem("xattr %q of missing inode %d", name, ino)
			s.dropKey(k)
			return
		}
		if _, err := meta.DecodeBytes(k, v); err != nil {
			s.problem("xattr %q of inode %d: %v", name, ino, err)
			s.dropKey(k)
		}
	})
}

func (s *fsckState) scanSymlinks() error {
	return s.scan(meta.PrefixSymlink, func(k, v []byte) {
		ino, err := meta.ParseKey1(meta.PrefixSymlink, k)
		if err != nil {
			s.problem("bad symlink key %x", k)
			s.dropKey(k)
			return
		}
		if in, ok := s.inodes[ino]; !ok || in.Mode&syscall.S_IFMT != syscall.S_IFLNK {
			s.problem("symlink target of inode %d, which is missing or not a symlink", ino)
			s.dropKey(k)
		}
	})
}

func (s *fsckState) checkInodes() error {
	for _, ino := range slices.Sorted(maps.Keys(s.inodes)) {
		in := s.inodes[ino]
		if in.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			k := meta.SymlinkKey(ino)
			v, err := s.rd.Get(k)
			if err == nil {
				_, err = meta.DecodeBytes(k, v)
			}
			if err != nil {
				// Nothing to show: removed (its entries on the next pass).
				s.problem("symlink %d has no readable target: %v", ino, err)
				s.dropKey(meta.InodeKey(ino))
				delete(s.inodes, ino)
				delete(s.dirtyInodes, ino)
				continue
			}
		}
		if s.blocks[ino] != in.Blocks {
			s.problem("inode %d records %d blocks, its extents map %d", ino, in.Blocks, s.blocks[ino])
			if s.blocks[ino] < in.Blocks {
				s.lostData = append(s.lostData, ino)
			}
			in.Blocks = s.blocks[ino]
			s.setInode(ino)
		}
		if isDir(in.Mode) {
			if _, named := s.dirParent[ino]; !named && s.orphans[ino] {
				continue // removed while open: checked with the orphans below
			}
			if parent, ok := s.dirParent[ino]; ok && parent != in.Parent {
				s.problem("directory %d records parent %d, its entry is in %d", ino, in.Parent, parent)
				in.Parent = parent
				s.setInode(ino)
			}
			if want := 2 + s.subdirs[ino]; in.Nlink != want {
				s.problem("directory %d has link count %d, expected %d", ino, in.Nlink, want)
				in.Nlink = want
				s.setInode(ino)
			}
			continue
		}
		if s.links[ino] == 0 && !s.orphans[ino] {
			s.problem("inode %d is not in any directory and not an orphan (leaked)", ino)
			s.lostFound = append(s.lostFound, ino)
		} else if in.Nlink != s.links[ino] && !(s.links[ino] == 0 && s.orphans[ino]) {
			s.problem("inode %d has link count %d, but %d entries name it", ino, in.Nlink, s.links[ino])
			in.Nlink = s.links[ino]
			s.setInode(ino)
		}
	}
	for ino := range s.orphans {
		if in, ok := s.inodes[ino]; !ok || s.links[ino] > 0 {
			s.problem("orphan record for inode %d, which is missing or linked", ino)
			s.dropKey(meta.OrphanKey(ino))
		} else if in.Nlink != 0 {
			s.problem("orphan %d still has %d links", ino, in.Nlink)
			in.Nlink = 0
			s.setInode(ino)
		}
	}
	s.checkTree()
	return nil
}

// checkTree checks that every directory's parent chain reaches the root. A
// directory no entry names is reconnected under /lost+found; so is one
// directory of each cycle, its entry removed (which breaks the cycle).
func (s *fsckState) checkTree() {
	reaches := map[uint64]bool{RootIno: true}
	for _, ino := range slices.Sorted(maps.Keys(s.inodes)) {
		if !isDir(s.inodes[ino].Mode) || s.orphans[ino] { // removed while open
			continue
		}
		var path []uint64
		onPath := map[uint64]bool{}
		for cur := ino; !reaches[cur]; {
			if onPath[cur] {
				s.problem("directory %d is in a cycle of directories not connected to the root", cur)
				s.dropKey(s.direntKey[cur])
				s.lostFound = append(s.lostFound, cur)
				break
			}
			path = append(path, cur)
			onPath[cur] = true
			parent, ok := s.dirParent[cur]
			if !ok {
				s.problem("directory %d has no entry in any directory", cur)
				s.lostFound = append(s.lostFound, cur)
				break
			}
			cur = parent
		}
		for _, d := range path {
			reaches[d] = true // now, or once reconnected
		}
	}
}

// checkData reads every written, referenced block from the device (once,
// however many files share it) and verifies its checksum.
func (fsys *FS) checkData(s *fsckState, progress func(string, int64)) {
	refs := append([]physRef(nil), s.written...)
	sort.Slice(refs, func(i, j int) bool { return refs[i].start < refs[j].start })
	const chunk = 256
	buf := device.AlignedBuffer(chunk * BlockSize)
	bufs := make([][]byte, chunk)
	for i := range bufs {
		bufs[i] = buf[i*BlockSize : (i+1)*BlockSize]
	}
	owner := func(p uint64) (uint64, uint64) {
		i := sort.Search(len(refs), func(i int) bool { return refs[i].start+refs[i].n > p })
		for ; i < len(refs) && refs[i].start <= p; i++ {
			if p < refs[i].start+refs[i].n {
				return refs[i].ino, refs[i].lblk + p - refs[i].start
			}
		}
		return 0, 0
	}
	reported, done := 0, int64(0)
	next := uint64(0) // blocks below it are verified already
	for _, r := range refs {
		for p := max(r.start, next); p < r.start+r.n; {
			n := min(r.start+r.n-p, chunk)
			if err := fsys.dev.ReadBlocks(bufs[:n], int64(p)*BlockSize); err != nil {
				s.unrepairable("reading blocks %d+%d: %v", p, n, err)
				p += n
				continue
			}
			want, ok, err := fsys.expectedCRCs(p, int(n))
			if err != nil {
				s.problem("checksums of blocks %d+%d: %v", p, n, err)
			}
			for i := uint64(0); err == nil && i < n; i++ {
				if ok[i] && meta.Checksum(bufs[i]) != want[i] && reported < 100 {
					reported++
					ino, lblk := owner(p + i)
					s.unrepairable("data block %d (inode %d, offset %d) fails its checksum", p+i, ino, lblk*BlockSize)
				}
			}
			p += n
			next = p
			if done += int64(n); progress != nil && done%(64*chunk) < int64(n) {
				progress("data", done)
			}
		}
	}
	if progress != nil {
		progress("data", done)
	}
}

// countSeg is a run of physical blocks with one recomputed reference count.
type countSeg struct {
	start, end uint64
	count      int
}

// segments recomputes, from the extents scanned, the reference count of
// every block of the device as runs.
func (s *fsckState) segments() []countSeg {
	type event struct {
		at    uint64
		delta int
	}
	ev := make([]event, 0, 2*len(s.refs)+2)
	// The reserved blocks (device label) are in use, by no file.
	ev = append(ev, event{0, +1}, event{reservedBlocks, -1})
	for _, r := range s.refs {
		ev = append(ev, event{r.start, +1}, event{r.start + r.n, -1})
	}
	sort.Slice(ev, func(i, j int) bool { return ev[i].at < ev[j].at })
	var segs []countSeg
	pos, count := uint64(0), 0
	for _, e := range ev {
		if e.at > pos {
			segs = append(segs, countSeg{pos, e.at, count})
			pos = e.at
		}
		count += e.delta
	}
	if pos < s.sb.DeviceBlocks {
		segs = append(segs, countSeg{pos, s.sb.DeviceBlocks, 0})
	}
	// Merge neighbours with equal counts (events at one block split runs).
	out := segs[:0]
	for _, sg := range segs {
		if n := len(out); n > 0 && out[n-1].end == sg.start && out[n-1].count == sg.count {
			out[n-1].end = sg.end
			continue
		}
		out = append(out, sg)
	}
	return out
}

// checkSpace compares reference counts, free space and checksums with the
// counts recomputed from the extents.
func (s *fsckState) checkSpace() error {
	segs := s.segments()
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
			s.spaceBad = true
			return
		}
		r, err := meta.DecodeRun(k, v)
		if err != nil {
			s.problem("refcount at block %d: %v", b, err)
			s.spaceBad = true
			return
		}
		if r.Count < 2 {
			s.problem("refcount record at block %d has count %d (< 2)", b, r.Count)
			s.spaceBad = true
		}
		recs = append(recs, rec{b, b + r.Len, int(r.Count)})
		s.report.sharedBlocks += int64(r.Len)
	})
	s.scan(meta.PrefixFree, func(k, v []byte) {
		b, err := meta.ParseKey1(meta.PrefixFree, k)
		if err != nil {
			s.problem("bad free key %x", k)
			s.spaceBad = true
			return
		}
		r, err := meta.DecodeRun(k, v)
		if err != nil {
			s.problem("free run at block %d: %v", b, err)
			s.spaceBad = true
			return
		}
		recs = append(recs, rec{b, b + r.Len, 0})
		s.report.freeBlocks += int64(r.Len)
	})
	sort.Slice(recs, func(i, j int) bool { return recs[i].start < recs[j].start })
	for i := 1; i < len(recs); i++ {
		if recs[i].start < recs[i-1].end {
			s.problem("space records overlap at block %d (counts %d and %d)", recs[i].start, recs[i-1].count, recs[i].count)
			s.spaceBad = true
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
			if c != sg.count {
				s.spaceBad = true
			}
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
			if !s.checksums[b] {
				s.noChecksum = append(s.noChecksum, b)
				if reported < 200 {
					reported++
					s.problem("written block %d has no checksum", b)
				}
			}
		}
	}
	// Checksum records of free blocks are allowed: they are left behind at
	// free time (deleting them would cost a write per block) and replaced
	// when the block is written again, before anything can read it.
	return nil
}

var _ = errors.New
