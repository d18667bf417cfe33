package reflinkfs

// The data path. Reads go file offset -> extent map -> physical block ->
// cache frame, so files sharing a block share its frame. Writes never modify
// a block that durable metadata references or that is shared: such blocks are
// copied to a new block first (copy on write). Blocks allocated by the running
// transaction (fresh) and preallocated (unwritten) blocks, when unshared, are
// written in place.

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/reflinkfs/reflinkfs/internal/cache"
	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

var zeroBlock [BlockSize]byte

// expectedCRCs returns the checksums recorded for physical blocks
// [first, first+n): recorded ones from the write-backs not yet committed,
// the rest from the committed checksum groups (one lookup per group).
func (fsys *FS) expectedCRCs(first uint64, n int) ([]uint32, []bool, error) {
	crcs, ok := make([]uint32, n), make([]bool, n)
	fsys.crcMu.Lock()
	if len(fsys.pendingCRC) > 0 {
		for i := range crcs {
			crcs[i], ok[i] = fsys.pendingCRC[first+uint64(i)]
		}
	}
	fsys.crcMu.Unlock()
	var group meta.ChecksumGroup
	loaded := ^uint64(0)
	for i := range crcs {
		if ok[i] {
			continue
		}
		b := first + uint64(i)
		g := b / meta.GroupBlocks
		if g != loaded {
			k := meta.ChecksumKey(g)
			v, err := fsys.store.Get(k)
			switch {
			case errors.Is(err, kv.ErrNotFound):
				group = meta.ChecksumGroup{}
			case err != nil:
				return nil, nil, err
			default:
				if group, err = meta.DecodeChecksumGroup(k, v); err != nil {
					return nil, nil, err
				}
			}
			loaded = g
		}
		slot := b % meta.GroupBlocks
		crcs[i], ok[i] = group.CRC[slot], group.Present&(1<<slot) != 0
	}
	return crcs, ok, nil
}

// commitChecksums writes the checksums of written-back blocks into their
// group records, merging with the committed ones, in batch b.
func (fsys *FS) commitChecksums(b kv.Batch, pending map[uint64]uint32) error {
	groups := map[uint64]*meta.ChecksumGroup{}
	for blk, c := range pending {
		g := blk / meta.GroupBlocks
		grp := groups[g]
		if grp == nil {
			grp = &meta.ChecksumGroup{}
			groups[g] = grp
		}
		slot := blk % meta.GroupBlocks
		grp.Present |= 1 << slot
		grp.CRC[slot] = c
	}
	for g, grp := range groups {
		k := meta.ChecksumKey(g)
		if grp.Present != ^uint64(0) { // keep the group's other checksums
			v, err := fsys.store.Get(k)
			if err == nil {
				old, err := meta.DecodeChecksumGroup(k, v)
				if err != nil {
					return err
				}
				for slot := uint64(0); slot < meta.GroupBlocks; slot++ {
					if grp.Present&(1<<slot) == 0 && old.Present&(1<<slot) != 0 {
						grp.Present |= 1 << slot
						grp.CRC[slot] = old.CRC[slot]
					}
				}
			} else if !errors.Is(err, kv.ErrNotFound) {
				return err
			}
		}
		if err := b.Set(k, grp.Encode(k)); err != nil {
			return err
		}
	}
	return nil
}

// verify checks blocks read from the device against their checksums and
// returns, per block, nil or an EIO error (counted and logged).
// lblk is the file block of the first one (for the log: inode and offset).
func (fsys *FS) verify(ino, lblk, first uint64, data [][]byte) []error {
	errs := make([]error, len(data))
	want, ok, err := fsys.expectedCRCs(first, len(data))
	for i, d := range data {
		p := first + uint64(i)
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("checksum record of block %d: %v: %w", p, err, syscall.EIO)
		case !ok[i]:
			errs[i] = fmt.Errorf("block %d has no checksum: %w", p, syscall.EIO)
		default:
			if got := meta.Checksum(d); got != want[i] {
				errs[i] = fmt.Errorf("block %d fails its checksum (stored %08x, computed %08x): %w", p, want[i], got, syscall.EIO)
			}
		}
		if errs[i] != nil {
			fsys.checksumErrors.Add(1)
			fsys.log.Error("data block unreadable", "inode", ino, "offset", (lblk+uint64(i))*BlockSize, "block", p, "err", errs[i])
		}
	}
	return errs
}

// missBatch is how many missing blocks one device read may fill: large
// enough for sequential reads to reach the device in big requests, small
// enough that concurrent readers cannot pin the whole cache.
func (fsys *FS) missBatch() int { return fsys.readBatch }

// parallelReadBlocks is the size of the pieces a large device read is split
// into, read concurrently: the device serves several requests at once much
// faster than one after another.
const parallelReadBlocks = 64

// readDevice reads consecutive blocks from first into bufs.
func (fsys *FS) readDevice(bufs [][]byte, first uint64) error {
	if len(bufs) <= parallelReadBlocks {
		if err := fsys.dev.ReadBlocks(bufs, int64(first)*BlockSize); err != nil {
			return fmt.Errorf("reading block %d: %v: %w", first, err, syscall.EIO)
		}
		return nil
	}
	errs := make(chan error, (len(bufs)+parallelReadBlocks-1)/parallelReadBlocks)
	n := 0
	for i := 0; i < len(bufs); i += parallelReadBlocks {
		part := bufs[i:min(i+parallelReadBlocks, len(bufs))]
		n++
		go func(part [][]byte, at uint64) { errs <- fsys.readDevice(part, at) }(part, first+uint64(i))
	}
	var first_ error
	for ; n > 0; n-- {
		if err := <-errs; err != nil && first_ == nil {
			first_ = err
		}
	}
	return first_
}

// visitRun calls fn, in order, with the contents of physical blocks
// [p, p+n), reading missing blocks from the device in batches and verifying
// their checksums. Frames are pinned only while fn runs or a batch is read.
//
// lblk is the file block that p maps, for error reports.
func (fsys *FS) visitRun(ino, lblk, p uint64, n int, fn func(i int, data []byte)) error {
	var buf [runBatch]*cache.Frame
	done := buf[:fsys.runBatch()] // visited, released together
	k := 0
	err := fsys.pinRun(ino, lblk, p, n, func(i int, f *cache.Frame) {
		fn(i, f.Data())
		done[k] = f
		if k++; k == len(done) {
			fsys.cache.UnpinAll(done[:k])
			k = 0
		}
	})
	fsys.cache.UnpinAll(done[:k])
	return err
}

// runBatch is the most resident frames pinRun pins with one cache call.
const runBatch = 64

// runBatch is how many resident frames pinRun pins with one cache call and
// visitRun holds before releasing them together: fewer in a small cache,
// where concurrent readers' pins could otherwise starve loads.
func (fsys *FS) runBatch() int { return min(runBatch, fsys.missBatch()) }

// pinRun calls take, in order, with the pinned, valid frames of physical
// blocks [p, p+n), reading missing blocks from the device in batches and
// verifying their checksums. take owns the pin it is given. After an error
// take is not called again; blocks it was not called for are not pinned.
func (fsys *FS) pinRun(ino, lblk, p uint64, n int, take func(i int, f *cache.Frame)) error {
	batch := fsys.missBatch()
	var missing []*cache.Frame // reserved, consecutive, not yet read
	firstMissing := 0
	readMissing := func() error {
		if len(missing) == 0 {
			return nil
		}
		bufs := make([][]byte, len(missing))
		for i, f := range missing {
			bufs[i] = f.Data()
		}
		err := fsys.readDevice(bufs, missing[0].Block())
		var verr []error
		if err == nil {
			verr = fsys.verify(ino, lblk+uint64(firstMissing), missing[0].Block(), bufs)
		}
		var firstErr error
		for i, f := range missing {
			e := err
			if e == nil {
				e = verr[i]
			}
			if e != nil {
				fsys.cache.Loaded(f, e)
				if firstErr == nil {
					firstErr = e
				}
				continue
			}
			fsys.cache.Loaded(f, nil)
			if firstErr == nil {
				take(firstMissing+i, f)
			} else {
				fsys.cache.Unpin(f)
			}
		}
		missing = missing[:0]
		return firstErr
	}
	var buf [runBatch]*cache.Frame
	run := buf[:fsys.runBatch()]
	for i := 0; i < n; i++ {
		// Resident blocks in bulk: one cache lock per chunk of blocks.
		if k := fsys.cache.GetRun(p+uint64(i), ino, run[:min(n-i, len(run))]); k > 0 {
			if err := readMissing(); err != nil {
				fsys.cache.UnpinAll(run[:k])
				return err
			}
			for j, f := range run[:k] {
				take(i+j, f)
			}
			i += k - 1
			continue
		}
		f, loaded, err := fsys.cache.GetOrReserve(p+uint64(i), ino)
		if err != nil {
			return errors.Join(readMissing(), err)
		}
		if loaded {
			if err := readMissing(); err != nil {
				fsys.cache.Unpin(f)
				return err
			}
			take(i, f)
			continue
		}
		if len(missing) == 0 {
			firstMissing = i
		}
		missing = append(missing, f)
		if len(missing) >= batch {
			if err := readMissing(); err != nil {
				return err
			}
		}
	}
	return readMissing()
}

// readLocked reads into p from offset off, which must be below the file
// size, len(p) clipped to it by the caller. in.lock must be held (shared or
// exclusive); it keeps the mapped blocks referenced while frames are read.
func (fsys *FS) readLocked(in *inode, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	b0 := uint64(off) / BlockSize
	b1 := (uint64(off) + uint64(len(p)) + BlockSize - 1) / BlockSize
	fsys.mu.Lock()
	ms, err := fsys.extentsIn(in, b0, b1)
	fsys.mu.Unlock()
	if err != nil {
		return err
	}
	pos := uint64(off)
	end := uint64(off) + uint64(len(p))
	zero := func(to uint64) {
		if to > pos {
			clear(p[pos-uint64(off) : to-uint64(off)])
			pos = to
		}
	}
	for _, m := range ms {
		zero(min(m.lblk*BlockSize, end))
		if m.unwritten {
			zero(min(m.end()*BlockSize, end))
			continue
		}
		err := fsys.visitRun(in.ino, m.lblk, m.pblk, int(m.n), func(i int, data []byte) {
			blockStart := (m.lblk + uint64(i)) * BlockSize
			from := max(pos, blockStart)
			to := min(end, blockStart+BlockSize)
			if from < to {
				copy(p[from-uint64(off):to-uint64(off)], data[from-blockStart:to-blockStart])
				pos = to
			}
		})
		if err != nil {
			return err
		}
	}
	zero(end)
	return nil
}

// blockWrite is the plan for one file block touched by a write.
type blockWrite struct {
	lblk    uint64
	dst     uint64 // physical block receiving the data
	src     uint64 // physical block holding the old contents, if srcData
	srcData bool   // old contents are in src (else zeros)
	inPlace bool   // dst == src, overwritten in place
}

// planWrite decides, for file blocks [b0, b1), where the new data goes,
// allocating and remapping as needed. Called with fs.mu held. It checks
// space before changing anything, so ENOSPC leaves the file untouched.
func (fsys *FS) planWrite(op *opState, in *inode, b0, b1 uint64) ([]blockWrite, error) {
	ms, err := fsys.extentsIn(in, b0, b1)
	if err != nil {
		return nil, err
	}
	// 1. Classify every block without changing anything.
	plan := make([]blockWrite, 0, b1-b0)
	var unwrittenInPlace []blockWrite
	need := uint64(0)
	pos := b0
	for _, m := range ms {
		for ; pos < m.lblk; pos++ {
			plan = append(plan, blockWrite{lblk: pos}) // hole
			need++
		}
		runs, err := fsys.refRuns(m.pblk, m.n)
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			for j := uint64(0); j < r.n; j++ {
				p := r.start + j
				w := blockWrite{lblk: m.lblk + (p - m.pblk), src: p, srcData: !m.unwritten}
				if r.count == 1 && (m.unwritten || fsys.isFresh(p)) {
					w.dst, w.inPlace = p, true
					if m.unwritten {
						unwrittenInPlace = append(unwrittenInPlace, w)
					}
				} else {
					need++
				}
				plan = append(plan, w)
			}
		}
		pos = m.end()
	}
	for ; pos < b1; pos++ {
		plan = append(plan, blockWrite{lblk: pos})
		need++
	}
	if need > fsys.alloc.Allocatable() {
		return nil, errNoSpace(fsys)
	}
	// 2. Give each run of blocks that cannot be written in place new blocks.
	for i := 0; i < len(plan); {
		if plan[i].inPlace {
			i++
			continue
		}
		j := i
		for j < len(plan) && !plan[j].inPlace {
			j++
		}
		runs, err := fsys.remapNew(op, in, plan[i].lblk, uint64(j-i), false)
		if err != nil {
			return nil, err
		}
		k := i
		for _, r := range runs {
			for b := uint64(0); b < r.Len; b++ {
				plan[k].dst = r.Start + b
				k++
			}
		}
		i = j
	}
	// 3. Unwritten blocks written in place become written, and fresh: their
	// contents are not durable yet, like any new block.
	for i := 0; i < len(unwrittenInPlace); {
		j := i + 1
		for j < len(unwrittenInPlace) && unwrittenInPlace[j].lblk == unwrittenInPlace[j-1].lblk+1 &&
			unwrittenInPlace[j].dst == unwrittenInPlace[j-1].dst+1 {
			j++
		}
		w := unwrittenInPlace[i]
		if err := fsys.convertWritten(in, w.lblk, w.dst, uint64(j-i)); err != nil {
			return nil, err
		}
		i = j
	}
	return plan, nil
}

// errNoSpace is ENOSPC, saying whether a commit would free space.
func errNoSpace(fsys *FS) error {
	if q := fsys.alloc.Quarantined(); q > 0 {
		return fmt.Errorf("%w (%d blocks freed by the running transaction become usable after it commits)", syscall.ENOSPC, q)
	}
	return syscall.ENOSPC
}

// convertWritten turns the unwritten mapping of file blocks [lblk, lblk+n),
// at physical blocks [p, p+n), into a written one.
func (fsys *FS) convertWritten(in *inode, lblk, p, n uint64) error {
	removed, err := fsys.unmapRange(in, lblk, lblk+n)
	if err != nil {
		return err
	}
	// The run may span several records; they must map exactly [p, p+n).
	next := p
	for _, m := range removed {
		if m.pblk != next || !m.unwritten {
			return fmt.Errorf("inode %d: converting blocks %d+%d: mapping changed: %w", in.ino, lblk, n, syscall.EIO)
		}
		next += m.n
	}
	if next != p+n {
		return fmt.Errorf("inode %d: converting blocks %d+%d: mapping changed: %w", in.ino, lblk, n, syscall.EIO)
	}
	fsys.fresh.ReplaceOrInsert(allocRun(p, n))
	return fsys.mapRange(in, mapping{lblk: lblk, pblk: p, n: n})
}

// writeLocked writes data at off without changing the file size. The caller
// holds in.lock exclusively and fsys.gate shared.
func (fsys *FS) writeLocked(op *opState, in *inode, data []byte, off int64) error {
	if len(data) == 0 {
		return nil
	}
	b0 := uint64(off) / BlockSize
	b1 := (uint64(off) + uint64(len(data)) + BlockSize - 1) / BlockSize
	fsys.mu.Lock()
	plan, err := fsys.planWrite(op, in, b0, b1)
	fsys.mu.Unlock()
	if err != nil {
		return err
	}
	return fsys.fillBlocks(in, plan, uint64(off), uint64(len(data)), func(blockStart uint64, frame []byte) {
		from := max(uint64(off), blockStart)
		to := min(uint64(off)+uint64(len(data)), blockStart+BlockSize)
		copy(frame[from-blockStart:to-blockStart], data[from-uint64(off):to-uint64(off)])
	})
}

// fillBlocks carries out a write plan: each destination frame receives the
// old contents (unless fully overwritten) and then the new bytes from put.
// The new bytes cover [off, off+n).
func (fsys *FS) fillBlocks(in *inode, plan []blockWrite, off, n uint64, put func(blockStart uint64, frame []byte)) error {
	var firstErr error
	for _, w := range plan {
		bs := w.lblk * BlockSize
		full := off <= bs && off+n >= bs+BlockSize
		if err := fsys.fillBlock(in, w, full, put); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (fsys *FS) fillBlock(in *inode, w blockWrite, full bool, put func(uint64, []byte)) error {
	blockStart := w.lblk * BlockSize
	dst, loaded, err := fsys.cache.GetOrReserve(w.dst, in.ino)
	if err != nil {
		return err
	}
	data := dst.Data()
	if loaded {
		// The frame may be dirty with a write-back in flight: keep
		// write-backs off it until the new bytes are complete.
		fsys.cache.BeginWrite(dst)
	}
	var fillErr error
	switch {
	case full:
		// Every byte is about to be overwritten.
	case !w.srcData:
		clear(data)
	case w.inPlace && loaded:
		// The resident frame is the block's current contents.
	case w.inPlace:
		// Current contents are on the device only.
		if fillErr = fsys.readDevice([][]byte{data}, w.src); fillErr == nil {
			fillErr = fsys.verify(in.ino, w.lblk, w.src, [][]byte{data})[0]
		}
	default:
		fillErr = fsys.visitRun(in.ino, w.lblk, w.src, 1, func(_ int, src []byte) { copy(data, src) })
	}
	if fillErr != nil {
		// Never leave another block's bytes in the frame: the unreadable
		// old contents become zeros and the caller gets EIO.
		clear(data)
	}
	put(blockStart, data)
	if loaded {
		fsys.cache.EndWrite(dst)
	} else {
		fsys.cache.Loaded(dst, nil)
		fsys.cache.MarkDirty(dst)
	}
	fsys.cache.Unpin(dst)
	return fillErr
}

// zeroPartial zeroes bytes [from, to) of the single file block containing
// them if that block holds written data (holes and unwritten blocks already
// read as zeros).
func (fsys *FS) zeroPartial(op *opState, in *inode, from, to int64) error {
	if from >= to {
		return nil
	}
	b := uint64(from) / BlockSize
	fsys.mu.Lock()
	ms, err := fsys.extentsIn(in, b, b+1)
	fsys.mu.Unlock()
	if err != nil || len(ms) == 0 || ms[0].unwritten {
		return err
	}
	return fsys.writeLocked(op, in, zeroBlock[:to-from], from)
}
