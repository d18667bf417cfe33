package modeltest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/reflinkfs/reflinkfs"
)

// ErrUnmodelled is returned by the oracle for an operation it refuses to
// model (it would allocate more than MaxNewBlocks blocks, where the engine
// could run out of space). The oracle is left unchanged; a sequence reaching
// such an operation ends there and counts as passing.
var ErrUnmodelled = errors.New("modeltest: operation outside the model (too large)")

// MaxNewBlocks bounds the blocks one operation may allocate in the model, so
// a 64 MiB device never runs out of space in a modelled sequence.
const MaxNewBlocks = 1024

// ident is a block identity: one physical block as the engine should have it.
type ident struct {
	id        int
	refs      int
	unwritten bool
	data      []byte // B bytes when written, nil when unwritten
}

// mfile is a modelled file: its size and its block map (absent = hole).
type mfile struct {
	size   int64
	blocks map[int64]*ident
}

// Oracle is the in-memory model of the filesystem. Methods take file indices
// (0 .. NumFiles-1) and return the error the engine must return (nil,
// syscall.Errno, reflinkfs.ErrRangesDiffer or ErrUnmodelled).
type Oracle struct {
	files    [NumFiles]*mfile
	detached [NumSlots]*mfile
	nextID   int
	live     int64 // identities with refs > 0

	// writeSharedInPlace is a deliberately injected bug (copy on write
	// forgotten), used only by this package's tests to prove the runner and
	// shrinker catch it.
	writeSharedInPlace bool
}

// NewOracle returns an empty model (no files).
func NewOracle() *Oracle { return &Oracle{} }

var (
	errInval  error = syscall.EINVAL
	errNoent  error = syscall.ENOENT
	errDiffer       = reflinkfs.ErrRangesDiffer
)

func ceilDiv(a int64) int64 { return (a + B - 1) / B }

func (o *Oracle) newIdent(unwritten bool, data []byte) *ident {
	o.nextID++
	o.live++
	return &ident{id: o.nextID, refs: 1, unwritten: unwritten, data: data}
}

func (o *Oracle) unref(b *ident) {
	b.refs--
	if b.refs == 0 {
		o.live--
	}
	if b.refs < 0 {
		panic("modeltest: negative reference count")
	}
}

// release drops every block of f.
func (o *Oracle) release(f *mfile) {
	for idx, b := range f.blocks {
		delete(f.blocks, idx)
		o.unref(b)
	}
}

// Exists reports whether file f exists.
func (o *Oracle) Exists(f int) bool { return o.files[f] != nil }

func (o *Oracle) file(f int) (*mfile, error) {
	if o.files[f] == nil {
		return nil, errNoent
	}
	return o.files[f], nil
}

// Size returns the size of f.
func (o *Oracle) Size(f int) (int64, error) {
	mf, err := o.file(f)
	if err != nil {
		return 0, err
	}
	return mf.size, nil
}

// read returns the bytes of [off, off+n) clipped to EOF (holes and unwritten
// blocks read as zeros).
func (mf *mfile) read(off, n int64) []byte {
	end := min(off+n, mf.size)
	if off >= end {
		return []byte{}
	}
	buf := make([]byte, end-off)
	for idx := off / B; idx*B < end; idx++ {
		b := mf.blocks[idx]
		if b == nil || b.unwritten {
			continue
		}
		bs := idx * B
		lo, hi := max(off, bs), min(end, bs+B)
		copy(buf[lo-off:hi-off], b.data[lo-bs:hi-bs])
	}
	return buf
}

// Read returns the bytes of f in [off, off+n), short at EOF.
func (o *Oracle) Read(f int, off int64, n int) ([]byte, error) {
	mf, err := o.file(f)
	if err != nil {
		return nil, err
	}
	if off < 0 || n < 0 {
		return nil, errInval
	}
	return mf.read(off, int64(n)), nil
}

// writeBlock writes p into block idx of f at byte o within the block. A shared
// identity is copied first (copy on write); an unshared one is modified in
// place (an unwritten one becomes written with zeros around p).
func (o *Oracle) writeBlock(f *mfile, idx int64, at int64, p []byte) {
	old := f.blocks[idx]
	if old != nil && (old.refs == 1 || o.writeSharedInPlace) {
		if old.unwritten {
			old.unwritten = false
			old.data = make([]byte, B)
		}
		copy(old.data[at:], p)
		return
	}
	data := make([]byte, B)
	if old != nil && !old.unwritten {
		copy(data, old.data)
	}
	copy(data[at:], p)
	nb := o.newIdent(false, data)
	f.blocks[idx] = nb
	if old != nil {
		o.unref(old)
	}
}

// write writes p at off; size becomes max(size, off+len(p)).
func (o *Oracle) write(f *mfile, off int64, p []byte) {
	end := off + int64(len(p))
	for idx := off / B; idx*B < end; idx++ {
		bs := idx * B
		lo, hi := max(off, bs), min(end, bs+B)
		o.writeBlock(f, idx, lo-bs, p[lo-off:hi-off])
	}
	f.size = max(f.size, end)
}

// zeroPartial zeroes [lo, hi) inside block idx if that block is written (a
// write, so copy on write when shared); holes and unwritten blocks already
// read as zeros and are left alone.
func (o *Oracle) zeroPartial(f *mfile, idx, lo, hi int64) {
	b := f.blocks[idx]
	if b == nil || b.unwritten {
		return
	}
	o.writeBlock(f, idx, lo-idx*B, make([]byte, hi-lo))
}

// Write writes data at off, creating f if missing (the file is created even
// when the write then fails, as open(O_CREAT) + pwrite would). off < 0 is
// EINVAL; an empty write changes nothing else.
func (o *Oracle) Write(f int, off int64, data []byte) error {
	if o.files[f] == nil {
		o.files[f] = &mfile{blocks: map[int64]*ident{}}
	}
	if off < 0 {
		return errInval
	}
	if len(data) == 0 {
		return nil
	}
	o.write(o.files[f], off, data)
	return nil
}

// Truncate sets the size of f. Shrinking drops the blocks at or beyond
// ceil(size/B) (preallocated ones beyond EOF too) and, for an unaligned size,
// zeroes the rest of the block containing the new EOF if it is written, as a
// write (copy on write when shared). Growing or keeping the size changes no
// block (preallocated blocks beyond EOF stay).
func (o *Oracle) Truncate(f int, size int64) error {
	mf, err := o.file(f)
	if err != nil {
		return err
	}
	if size < 0 {
		return errInval
	}
	if size < mf.size {
		keep := ceilDiv(size)
		for idx, b := range mf.blocks {
			if idx >= keep {
				delete(mf.blocks, idx)
				o.unref(b)
			}
		}
	}
	if size < mf.size && size%B != 0 {
		idx := size / B
		o.zeroPartial(mf, idx, size, (idx+1)*B)
	}
	mf.size = size
	return nil
}

// fallocArgs validates fallocate-style arguments: off < 0 or n <= 0 is EINVAL.
func fallocArgs(off, n int64) error {
	if off < 0 || n <= 0 {
		return errInval
	}
	return nil
}

// edges handles the partial blocks at the ends of [off, off+n) and returns the
// range of whole blocks [first, last) inside it.
func (o *Oracle) edges(mf *mfile, off, n int64) (first, last int64) {
	end := off + n
	first, last = ceilDiv(off), end/B
	if first > last { // the range lies inside one block
		o.zeroPartial(mf, off/B, off, end)
		return first, first
	}
	if off%B != 0 {
		o.zeroPartial(mf, off/B, off, first*B)
	}
	if end%B != 0 {
		o.zeroPartial(mf, last, last*B, end)
	}
	return first, last
}

// PunchHole never changes the size and is not clamped to EOF: whole blocks in
// [off, off+n) become holes, written blocks partially covered get the covered
// bytes zeroed (a write: copy on write when shared).
func (o *Oracle) PunchHole(f int, off, n int64) error {
	mf, err := o.file(f)
	if err != nil {
		return err
	}
	if err := fallocArgs(off, n); err != nil {
		return err
	}
	first, last := o.edges(mf, off, n)
	for idx, b := range mf.blocks {
		if idx >= first && idx < last {
			delete(mf.blocks, idx)
			o.unref(b)
		}
	}
	return nil
}

// ZeroRange: whole blocks in [off, off+n) become new unwritten identities
// (holes included), partially covered written blocks get the covered bytes
// zeroed as a write; size = max(size, off+n).
func (o *Oracle) ZeroRange(f int, off, n int64) error {
	mf, err := o.file(f)
	if err != nil {
		return err
	}
	if err := fallocArgs(off, n); err != nil {
		return err
	}
	if n/B > MaxNewBlocks {
		return ErrUnmodelled
	}
	first, last := o.edges(mf, off, n)
	for idx := first; idx < last; idx++ {
		old := mf.blocks[idx]
		mf.blocks[idx] = o.newIdent(true, nil)
		if old != nil {
			o.unref(old)
		}
	}
	mf.size = max(mf.size, off+n)
	return nil
}

// Allocate gives every hole block overlapping [off, off+n) a new unwritten
// identity; existing blocks are untouched. Size = max(size, off+n) unless keep.
func (o *Oracle) Allocate(f int, off, n int64, keep bool) error {
	mf, err := o.file(f)
	if err != nil {
		return err
	}
	if err := fallocArgs(off, n); err != nil {
		return err
	}
	first, last := off/B, ceilDiv(off+n)
	if last-first > MaxNewBlocks {
		return ErrUnmodelled
	}
	for idx := first; idx < last; idx++ {
		if mf.blocks[idx] == nil {
			mf.blocks[idx] = o.newIdent(true, nil)
		}
	}
	if !keep {
		mf.size = max(mf.size, off+n)
	}
	return nil
}

// Unshare gives every shared block overlapping [off, off+n) a new identity of
// the same kind and bytes. Size is unchanged.
func (o *Oracle) Unshare(f int, off, n int64) error {
	mf, err := o.file(f)
	if err != nil {
		return err
	}
	if err := fallocArgs(off, n); err != nil {
		return err
	}
	first, last := off/B, ceilDiv(off+n)
	for idx, b := range mf.blocks {
		if idx >= first && idx < last && b.refs > 1 {
			var data []byte
			if !b.unwritten {
				data = slices.Clone(b.data)
			}
			mf.blocks[idx] = o.newIdent(b.unwritten, data)
			o.unref(b)
		}
	}
	return nil
}

// remap makes blocks [dIdx, dIdx+nb) of d the identities of blocks
// [sIdx, sIdx+nb) of s (holes stay holes).
func (o *Oracle) remap(s, d *mfile, sIdx, dIdx, nb int64) {
	type pair struct {
		rel int64
		b   *ident
	}
	var src []pair
	for idx, b := range s.blocks {
		if idx >= sIdx && idx < sIdx+nb {
			src = append(src, pair{idx - sIdx, b})
			b.refs++ // held while the destination is cleared
		}
	}
	for idx, b := range d.blocks {
		if idx >= dIdx && idx < dIdx+nb {
			delete(d.blocks, idx)
			o.unref(b)
		}
	}
	for _, p := range src {
		d.blocks[dIdx+p.rel] = p.b // the reference taken above
	}
}

func overlap(a, b, n int64) bool { return a < b+n && b < a+n }

// files2 returns source and destination, ENOENT if either is missing.
func (o *Oracle) files2(src, dst int) (*mfile, *mfile, error) {
	s, d := o.files[src], o.files[dst]
	if s == nil || d == nil {
		return nil, nil, errNoent
	}
	return s, d, nil
}

// CloneRange shares blocks of src into dst, as FICLONERANGE. Checks in order:
// ENOENT; negative arguments, unaligned offsets: EINVAL; n == 0 means to src
// EOF (srcOff > size: EINVAL; nothing to clone: success); srcOff+n beyond src
// EOF: EINVAL; n unaligned unless the range ends at src EOF and does not end
// inside dst (dstOff+n >= dst size): EINVAL; same file, overlapping: EINVAL.
// dst size becomes max(dst size, dstOff+n).
func (o *Oracle) CloneRange(src, dst int, srcOff, n, dstOff int64) error {
	s, d, err := o.files2(src, dst)
	if err != nil {
		return err
	}
	if srcOff < 0 || dstOff < 0 || n < 0 || srcOff%B != 0 || dstOff%B != 0 {
		return errInval
	}
	if n == 0 {
		if srcOff > s.size {
			return errInval
		}
		n = s.size - srcOff
		if n == 0 {
			return nil
		}
	}
	if n > s.size-srcOff {
		return errInval
	}
	if n%B != 0 && !(srcOff+n == s.size && dstOff+n >= d.size) {
		return errInval
	}
	if src == dst && overlap(srcOff, dstOff, n) {
		return errInval
	}
	o.remap(s, d, srcOff/B, dstOff/B, ceilDiv(n))
	d.size = max(d.size, dstOff+n)
	return nil
}

// dedupePrep validates a dedupe and returns the length it would share
// (0 when nothing is to be done) without changing anything.
func (o *Oracle) dedupePrep(src, dst int, srcOff, n, dstOff int64) (int64, error) {
	s, d, err := o.files2(src, dst)
	if err != nil {
		return 0, err
	}
	if srcOff < 0 || dstOff < 0 || n < 0 || srcOff%B != 0 || dstOff%B != 0 {
		return 0, errInval
	}
	n = min(n, s.size-srcOff, d.size-dstOff)
	if n <= 0 {
		return 0, nil
	}
	if !(srcOff+n == s.size && dstOff+n == d.size) {
		n -= n % B
	}
	if n == 0 {
		return 0, nil
	}
	if src == dst && overlap(srcOff, dstOff, n) {
		return 0, errInval
	}
	// Whole blocks can be compared: bytes beyond EOF in a last block are zero
	// in both files, and a partial last block is only used at both EOFs.
	// Blocks unmapped on both sides are equal (zeros), so only mapped ones
	// need comparing; that keeps huge sparse ranges cheap.
	sIdx, dIdx, nb := srcOff/B, dstOff/B, ceilDiv(n)
	for idx, b := range s.blocks {
		if idx >= sIdx && idx < sIdx+nb && !sameBytes(b, d.blocks[dIdx+idx-sIdx]) {
			return 0, errDiffer
		}
	}
	for idx, b := range d.blocks {
		if idx >= dIdx && idx < dIdx+nb && !sameBytes(s.blocks[sIdx+idx-dIdx], b) {
			return 0, errDiffer
		}
	}
	return n, nil
}

var zeroBlock = make([]byte, B)

func sameBytes(a, b *ident) bool {
	if a == b {
		return true
	}
	ab, bb := zeroBlock, zeroBlock
	if a != nil && !a.unwritten {
		ab = a.data
	}
	if b != nil && !b.unwritten {
		bb = b.data
	}
	return bytes.Equal(ab, bb)
}

// DedupeRange shares src blocks into dst when the bytes are equal, as
// FIDEDUPERANGE. ENOENT; negative arguments or unaligned offsets: EINVAL.
// n is clamped to both EOFs (nothing left: returns 0), then rounded down to
// whole blocks unless the range ends at both EOFs; same file overlapping:
// EINVAL; bytes differ: (0, ErrRangesDiffer) and nothing changes. Otherwise
// dst blocks get the src identities and n is returned. Sizes never change.
func (o *Oracle) DedupeRange(src, dst int, srcOff, n, dstOff int64) (int64, error) {
	n, err := o.dedupePrep(src, dst, srcOff, n, dstOff)
	if err != nil || n == 0 {
		return 0, err
	}
	o.remap(o.files[src], o.files[dst], srcOff/B, dstOff/B, ceilDiv(n))
	return n, nil
}

// CopyRange copies bytes as copy_file_range, sharing blocks where it can.
// ENOENT; negative arguments: EINVAL. n is clamped to src size - srcOff
// (nothing left: returns 0). Same file overlapping: EINVAL. With equal
// alignment (srcOff%B == dstOff%B) the unaligned head up to the first block
// boundary is written, whole blocks after it are shared (holes stay holes),
// and a partial tail is shared when the range ends at src EOF and does not end
// inside dst (dstOff+n >= dst size), else written. With different alignment
// the whole range is written (holes read as zeros and are written). dst size
// becomes max(dst size, dstOff+n). Returns n.
func (o *Oracle) CopyRange(src, dst int, srcOff, n, dstOff int64) (int64, error) {
	s, d, err := o.files2(src, dst)
	if err != nil {
		return 0, err
	}
	if srcOff < 0 || dstOff < 0 || n < 0 {
		return 0, errInval
	}
	n = min(n, s.size-srcOff)
	if n <= 0 {
		return 0, nil
	}
	if src == dst && overlap(srcOff, dstOff, n) {
		return 0, errInval
	}
	srcSize, dstSize := s.size, d.size
	if srcOff%B != dstOff%B {
		if n/B > MaxNewBlocks {
			return 0, ErrUnmodelled
		}
		o.write(d, dstOff, s.read(srcOff, n))
		return n, nil
	}
	pos := int64(0)
	if r := srcOff % B; r != 0 {
		pos = min(n, B-r)
		o.write(d, dstOff, s.read(srcOff, pos))
	}
	if whole := (n - pos) / B * B; whole > 0 {
		o.remap(s, d, (srcOff+pos)/B, (dstOff+pos)/B, whole/B)
		pos += whole
	}
	if tail := n - pos; tail > 0 {
		if srcOff+n == srcSize && dstOff+n >= dstSize {
			o.remap(s, d, (srcOff+pos)/B, (dstOff+pos)/B, 1)
		} else {
			o.write(d, dstOff+pos, s.read(srcOff+pos, tail))
		}
	}
	d.size = max(d.size, dstOff+n)
	return n, nil
}

// Sync changes nothing in the model (ENOENT if missing).
func (o *Oracle) Sync(f int) error {
	_, err := o.file(f)
	return err
}

// Remove removes f and releases its blocks.
func (o *Oracle) Remove(f int) error {
	mf, err := o.file(f)
	if err != nil {
		return err
	}
	o.release(mf)
	o.files[f] = nil
	return nil
}

// Rename moves old to new, removing new if it exists. old == new changes
// nothing.
func (o *Oracle) Rename(old, new int) error {
	mf, err := o.file(old)
	if err != nil {
		return err
	}
	if old == new {
		return nil
	}
	if victim := o.files[new]; victim != nil {
		o.release(victim)
	}
	o.files[new], o.files[old] = mf, nil
	return nil
}

// Reopen closes every detached file (releasing its blocks); named files are
// unchanged.
func (o *Oracle) Reopen() {
	for s := range o.detached {
		o.CloseDetached(s)
	}
}

// Detach removes f while a handle keeps it open in slot (whatever slot held
// is closed first). ENOENT if f is missing (slot untouched).
func (o *Oracle) Detach(f, slot int) error {
	mf, err := o.file(f)
	if err != nil {
		return err
	}
	o.CloseDetached(slot)
	o.detached[slot], o.files[f] = mf, nil
	return nil
}

// CloseDetached closes the handle in slot, releasing the file's blocks.
func (o *Oracle) CloseDetached(slot int) {
	if mf := o.detached[slot]; mf != nil {
		o.release(mf)
		o.detached[slot] = nil
	}
}

// DetachedOpen reports whether slot holds a file.
func (o *Oracle) DetachedOpen(slot int) bool { return o.detached[slot] != nil }

// DetachedSize returns the size of the detached file in slot.
func (o *Oracle) DetachedSize(slot int) int64 { return o.detached[slot].size }

// ReadDetached returns the bytes of the detached file in slot.
func (o *Oracle) ReadDetached(slot int, off, n int64) []byte {
	return o.detached[slot].read(off, n)
}

// UsedBytes is the number of live identities times B.
func (o *Oracle) UsedBytes() int64 { return o.live * B }

func (o *Oracle) allFiles() []*mfile {
	var all []*mfile
	for _, mf := range o.files {
		if mf != nil {
			all = append(all, mf)
		}
	}
	for _, mf := range o.detached {
		if mf != nil {
			all = append(all, mf)
		}
	}
	return all
}

// LogicalBytes is the number of mapped blocks over all files (named and
// detached), a shared block counted once per reference, times B.
func (o *Oracle) LogicalBytes() int64 {
	var n int64
	for _, mf := range o.allFiles() {
		n += int64(len(mf.blocks))
	}
	return n * B
}

// SharedBytes is the number of live identities with more than one reference,
// times B.
func (o *Oracle) SharedBytes() int64 {
	seen := map[*ident]bool{}
	for _, mf := range o.allFiles() {
		for _, b := range mf.blocks {
			if b.refs > 1 {
				seen[b] = true
			}
		}
	}
	return int64(len(seen)) * B
}

// BlockState describes one mapped block of a file.
type BlockState struct {
	Index     int64 // logical block index
	ID        int   // identity: equal IDs must be the same physical block
	Refs      int
	Unwritten bool
}

// Blocks returns the mapped blocks of f sorted by index (nil if f is missing).
func (o *Oracle) Blocks(f int) []BlockState {
	mf := o.files[f]
	if mf == nil {
		return nil
	}
	out := make([]BlockState, 0, len(mf.blocks))
	for idx, b := range mf.blocks {
		out = append(out, BlockState{Index: idx, ID: b.id, Refs: b.refs, Unwritten: b.unwritten})
	}
	slices.SortFunc(out, func(a, b BlockState) int { return int(a.Index - b.Index) })
	return out
}

// Describe renders file f for failure messages: size and block map, e.g.
// "size 9000: 0=#3w×2 1=#4u".
func (o *Oracle) Describe(f int) string {
	mf := o.files[f]
	if mf == nil {
		return "missing"
	}
	return describe(mf, o.Blocks(f))
}

func describe(mf *mfile, blocks []BlockState) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "size %d:", mf.size)
	for i, b := range blocks {
		if i == 40 {
			fmt.Fprintf(&sb, " ... (%d blocks)", len(blocks))
			break
		}
		kind := "w"
		if b.Unwritten {
			kind = "u"
		}
		fmt.Fprintf(&sb, " %d=#%d%s", b.Index, b.ID, kind)
		if b.Refs > 1 {
			fmt.Fprintf(&sb, "×%d", b.Refs)
		}
	}
	return sb.String()
}
