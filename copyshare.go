package reflinkfs

// Copy detection at write time (docs/copy-sharing.md): a whole block written
// to a file that is byte for byte equal to the block of a source file at the
// same offset is stored as a reference to that block, as CloneRange would,
// instead of a new block. Copy tools that do not call copy_file_range (cp of
// sparse files, sendfile, rsync, tar, cat) copy offset to offset, so the
// same offset is the case that matters.

import (
	"bytes"
	"errors"
	"io/fs"
	"slices"
	"syscall"

	"github.com/reflinkfs/reflinkfs/internal/cache"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// WriteAtSharing writes p at off like WriteAt, except that each block the
// write touches that will then equal the block at the same offset of one of
// sources is made to share that block (copy on write, as CloneRange:
// the source's dirty data is written back first, so shared blocks are
// clean), and each whole block of zeros at an offset where that source has
// a hole (or preallocated blocks) becomes a hole. A block the write covers
// in part is compared as it reads after the write (its other bytes are the
// file's), so a copy written in pieces that are not block multiples is
// shared too, block by block as the pieces complete them. Blocks that match
// no source are written normally. The file grows to off+len(p)
// if shorter, as with WriteAt. Sources must be open for reading on the same
// FS; sources that are f's own inode, not regular, or closed are ignored.
//
// Candidates are compared cheaply first: a block resident in the cache is
// compared byte for byte (which stops at the first difference), one that is
// not is compared by its stored CRC32C, and read and compared only if the
// checksums agree. It returns the bytes written and the number of blocks
// shared (holes kept count too).
//
// The caller decides which sources are safe to match: sharing against a
// file the writer could not read would tell it whether its data exists
// (the side channel of deduplication).
func (f *File) WriteAtSharing(p []byte, off int64, sources []*File) (int, int64, error) {
	if err := checkRange(off, int64(len(p))); err != nil {
		return 0, 0, f.err("write", err)
	}
	var srcs []*File
	for _, s := range sources {
		if s == nil || s.fsys != f.fsys || s.in == f.in || !s.readable() || s.checkOpen() != nil {
			continue
		}
		if slices.ContainsFunc(srcs, func(x *File) bool { return x.in == s.in }) {
			continue
		}
		srcs = append(srcs, s)
	}
	if len(p) == 0 || len(srcs) == 0 {
		n, err := f.WriteAt(p, off)
		return n, 0, err
	}
	if err := f.checkOpen(); err != nil {
		return 0, 0, f.err("write", err)
	}
	if !f.writable() {
		return 0, 0, f.err("write", syscall.EBADF)
	}
	fsys := f.fsys
	if fsys.opt.ReadOnly {
		return 0, 0, f.err("write", syscall.EROFS)
	}
	var shared, holes int64
	err := f.lockSharing(srcs, func(op *opState) error {
		var err error
		shared, holes, err = fsys.writeSharing(op, f.in, srcs, p, off)
		return err
	})
	if errors.Is(err, syscall.ENOSPC) {
		// Out of space (maybe only until a commit): WriteAt waits for
		// freed blocks and retries. Rewriting blocks shared above with the
		// same bytes is correct, only less shared.
		n, err := f.WriteAt(p, off)
		return n, 0, err
	}
	if err != nil {
		return 0, 0, f.err("write", err)
	}
	fsys.copySharedBlocks.Add(shared)
	fsys.copyHoleBlocks.Add(holes)
	fsys.throttleDirty()
	return len(p), shared + holes, nil
}

// lockSharing runs fn with f's inode locked exclusively, the sources'
// inodes shared (all in inode-number order, as lockPair) and the commit
// gate held shared.
func (f *File) lockSharing(srcs []*File, fn func(op *opState) error) error {
	fsys := f.fsys
	ins := []*inode{f.in}
	for _, s := range srcs {
		ins = append(ins, s.in)
	}
	slices.SortFunc(ins, func(a, b *inode) int {
		switch {
		case a.ino < b.ino:
			return -1
		case a.ino > b.ino:
			return 1
		}
		return 0
	})
	for _, in := range ins {
		if in == f.in {
			in.lock.Lock()
		} else {
			in.lock.RLock()
		}
	}
	defer func() {
		for _, in := range ins {
			if in == f.in {
				in.lock.Unlock()
			} else {
				in.lock.RUnlock()
			}
		}
		fsys.maybeCommit()
	}()
	fsys.gate.RLock()
	defer fsys.gate.RUnlock()
	op := &opState{}
	defer fsys.finish(op)
	if fsys.isClosed() {
		return fs.ErrClosed
	}
	return fn(op)
}

// writeSharing is WriteAtSharing with the locks held: it finds, for the
// file blocks the write touches, the source each block can share, remaps
// runs of them, and writes the rest. A block the write covers only in part
// is compared as it will read after the write (its current bytes with the
// new ones laid over them): a copy tool writing in pieces that are not
// block multiples (tar's 10 KiB records) completes such a block with its
// next write, which then shares it.
func (fsys *FS) writeSharing(op *opState, in *inode, srcs []*File, p []byte, off int64) (shared, holes int64, err error) {
	start, end := uint64(off), uint64(off)+uint64(len(p))
	b0, b1 := start/BlockSize, (end+BlockSize-1)/BlockSize
	n := int(b1 - b0)
	var dstSize int64
	fsys.locked(func() error { dstSize = in.rec.Size; return nil })
	merged := map[int][]byte{}
	var mergeErr error
	// block returns block i of the range as it reads after the write.
	block := func(i int) []byte {
		bs := (b0 + uint64(i)) * BlockSize
		if bs >= start && bs+BlockSize <= end {
			return p[bs-start : bs-start+BlockSize]
		}
		if b, ok := merged[i]; ok {
			return b
		}
		b := make([]byte, BlockSize)
		if int64(bs) < dstSize {
			if err := fsys.readLocked(in, b[:min(BlockSize, dstSize-int64(bs))], int64(bs)); err != nil && mergeErr == nil {
				mergeErr = err
			}
		}
		from, to := max(start, bs), min(end, bs+BlockSize)
		copy(b[from-bs:to-bs], p[from-start:to-start])
		merged[i] = b
		return b
	}
	match := make([]int, n) // index into srcs, or -1
	isHole := make([]bool, n)
	for i := range match {
		match[i] = -1
	}
	zero := make([]int8, n) // 0 unknown, 1 zero, -1 not
	isZero := func(i int) bool {
		if zero[i] == 0 {
			zero[i] = -1
			if bytes.Equal(block(i), zeroBlock[:]) {
				zero[i] = 1
			}
		}
		return zero[i] == 1
	}
	left := n
	for si, s := range srcs {
		if left == 0 {
			break
		}
		var segs []segment
		var size int64
		if err := fsys.locked(func() error {
			size = s.in.rec.Size
			if !isReg(s.in.rec.Mode) {
				return nil
			}
			var err error
			segs, err = fsys.segments(s.in, b0, uint64(n))
			return err
		}); err != nil {
			return 0, 0, err
		}
		// Blocks of the source's contents: up to its end of file.
		limit := min(n, int(max(0, (size+BlockSize-1)/BlockSize-int64(b0))))
		for _, sg := range segs {
			to := min(int(sg.end), limit)
			if !sg.written {
				for i := int(sg.start); i < to; i++ {
					if match[i] < 0 && isZero(i) {
						match[i], isHole[i] = si, true
						left--
					}
				}
				if mergeErr != nil {
					return 0, 0, mergeErr
				}
				continue
			}
			// Resident blocks in bulk (one cache lock per chunk); the rest
			// one by one, by checksum first.
			var buf [runBatch]*cache.Frame
			for i := int(sg.start); i < to; {
				p := sg.pblk + uint64(i) - sg.start
				k := fsys.cache.GetRun(p, 0, buf[:min(to-i, runBatch)])
				for j, fr := range buf[:k] {
					if match[i+j] < 0 && bytes.Equal(fr.Data(), block(i+j)) {
						match[i+j] = si
						left--
					}
				}
				fsys.cache.UnpinAll(buf[:k])
				i += k
				if i < to && k < min(to-i+k, runBatch) { // block i is not resident
					if match[i] < 0 {
						eq, err := fsys.sameAsBlock(s.in.ino, b0+uint64(i), sg.pblk+uint64(i)-sg.start, block(i))
						if err != nil {
							return 0, 0, err
						}
						if eq {
							match[i] = si
							left--
						}
					}
					i++
				}
				if mergeErr != nil {
					return 0, 0, mergeErr
				}
			}
		}
	}
	// Remap runs of blocks matching one source; write everything else.
	pos := start // handled up to here
	write := func(to uint64) error {
		if to <= pos {
			return nil
		}
		err := fsys.writeLocked(op, in, p[pos-start:to-start], int64(pos))
		pos = to
		return err
	}
	for i := 0; i < n; {
		if match[i] < 0 {
			i++
			continue
		}
		j := i + 1
		for j < n && match[j] == match[i] {
			j++
		}
		if err := write(max(start, (b0+uint64(i))*BlockSize)); err != nil {
			return shared, holes, err
		}
		s := srcs[match[i]]
		if err := fsys.locked(func() error {
			return fsys.remap(op, in, s.in, b0+uint64(i), b0+uint64(i), uint64(j-i))
		}); err != nil {
			return shared, holes, err
		}
		for k := i; k < j; k++ {
			if isHole[k] {
				holes++
			} else {
				shared++
			}
		}
		pos = min(end, (b0+uint64(j))*BlockSize)
		i = j
	}
	if err := write(end); err != nil {
		return shared, holes, err
	}
	return shared, holes, fsys.locked(func() error { return fsys.touch(in, int64(end)) })
}

// sameAsBlock reports whether physical block pblk (file block lblk of inode
// ino, for error reports) holds data. A resident block is compared directly;
// otherwise the stored checksum must agree before the block is read.
func (fsys *FS) sameAsBlock(ino, lblk, pblk uint64, data []byte) (bool, error) {
	if fr := fsys.cache.Get(pblk, 0); fr != nil {
		eq := bytes.Equal(fr.Data(), data)
		fsys.cache.Unpin(fr)
		return eq, nil
	}
	crc, ok, err := fsys.expectedCRCs(pblk, 1)
	if err != nil {
		return false, err
	}
	if ok[0] && crc[0] != meta.Checksum(data) {
		return false, nil
	}
	var eq bool
	err = fsys.visitRun(ino, lblk, pblk, 1, func(_ int, b []byte) { eq = bytes.Equal(b, data) })
	if err != nil {
		// An unreadable source block is simply not shared.
		return false, nil
	}
	return eq, nil
}
