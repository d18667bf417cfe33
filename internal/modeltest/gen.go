package modeltest

import (
	"errors"
	"math/rand/v2"
	"slices"
)

// GenOptions shape generated sequences.
type GenOptions struct {
	Ops    int  // sequence length (default 60)
	Detach bool // emit Detach / CloseDetached (the target must be a Detacher)
	// Without lists kinds never to generate (to get past a known bug). Write
	// cannot be left out.
	Without []Kind
}

// Huge is the base of the occasional huge offsets (1 TiB): far beyond
// anything written, small enough for any sane maximum file size.
const Huge = int64(1) << 40

// Generate returns the sequence for seed. The generator keeps its own oracle
// so it can aim at interesting states: existing files, offsets near EOF and
// block boundaries, clone ranges that are valid, dedupe ranges whose bytes
// match. The same seed always gives the same sequence.
func Generate(seed uint64, opt GenOptions) []Op {
	if opt.Ops <= 0 {
		opt.Ops = 60
	}
	g := &generator{r: rand.New(rand.NewPCG(seed, seed^0x6a09e667f3bcc909)), o: NewOracle(), opt: opt}
	ops := make([]Op, 0, opt.Ops)
	for tries := 0; len(ops) < opt.Ops && tries < 20*opt.Ops; tries++ {
		op := g.next()
		if !op.valid() {
			continue
		}
		if r := op.applyOracle(g.o); errors.Is(r.Err, ErrUnmodelled) {
			continue
		}
		ops = append(ops, op)
	}
	return ops
}

type generator struct {
	r   *rand.Rand
	o   *Oracle
	opt GenOptions
	// follow, when set, makes the next op: the second half of a two-op
	// pattern, generated after the first half was applied to the oracle.
	follow func() Op
}

// weights of the op kinds, in percent-ish units.
var genWeights = []struct {
	kind   Kind
	weight int
}{
	{KWrite, 18}, {KRead, 5}, {KTruncate, 6}, {KPunch, 6}, {KZero, 5}, {KAlloc, 5},
	{KClone, 12}, {KDedupe, 7}, {KCopy, 10}, {KUnshare, 4}, {KSync, 3}, {KReopen, 2},
	{KRemove, 2}, {KRename, 3}, {KDetach, 2}, {KCloseDetached, 2},
}

func (g *generator) allowed(k Kind) bool { return k == KWrite || !slices.Contains(g.opt.Without, k) }

func (g *generator) weight(k Kind, w int) int {
	if !g.allowed(k) {
		return 0
	}
	return w
}

func (g *generator) pct(p int) bool { return g.r.IntN(100) < p }

func (g *generator) next() Op {
	if f := g.follow; f != nil {
		g.follow = nil
		return f()
	}
	if len(g.existing()) == 0 {
		return g.write()
	}
	total := 0
	for _, w := range genWeights {
		total += g.weight(w.kind, w.weight)
	}
	pick := g.r.IntN(total)
	kind := KWrite
	for _, w := range genWeights {
		if pick < g.weight(w.kind, w.weight) {
			kind = w.kind
			break
		}
		pick -= g.weight(w.kind, w.weight)
	}
	switch kind {
	case KWrite:
		return g.write()
	case KRead:
		f := g.file()
		off, n := g.rangeIn(f)
		if n < 0 {
			n = 1 // a negative read length is a harness error, not an engine one
		}
		return Read(f, off, n)
	case KTruncate:
		return g.truncate()
	case KPunch:
		f := g.file()
		off, n := g.rangeIn(f)
		return Punch(f, off, n)
	case KZero:
		f := g.file()
		off, n := g.rangeIn(f)
		return Zero(f, off, n)
	case KAlloc:
		f := g.file()
		off, n := g.rangeIn(f)
		return Alloc(f, off, n, g.pct(50))
	case KClone:
		return g.clone()
	case KDedupe:
		return g.dedupe()
	case KCopy:
		return g.copy()
	case KUnshare:
		f := g.file()
		if g.pct(40) {
			return Unshare(f, 0, max(g.size(f), 1))
		}
		off, n := g.rangeIn(f)
		return Unshare(f, off, n)
	case KSync:
		return Sync(g.file())
	case KReopen:
		return Reopen()
	case KRemove:
		return Remove(g.file())
	case KRename:
		return Rename(g.file(), g.r.IntN(NumFiles))
	case KDetach:
		if g.opt.Detach {
			slot := g.r.IntN(NumSlots)
			for s := range NumSlots {
				if !g.o.DetachedOpen(s) {
					slot = s
				}
			}
			return Detach(g.file(), slot)
		}
	case KCloseDetached:
		if g.opt.Detach {
			for s := range NumSlots {
				if g.o.DetachedOpen(s) {
					return CloseDetached(s)
				}
			}
		}
	}
	return g.write()
}

func (g *generator) existing() []int {
	var ex []int
	for f := range NumFiles {
		if g.o.Exists(f) {
			ex = append(ex, f)
		}
	}
	return ex
}

// file picks an existing file, now and then any name (ENOENT is predicted).
func (g *generator) file() int {
	ex := g.existing()
	if len(ex) == 0 || g.pct(4) {
		return g.r.IntN(NumFiles)
	}
	return ex[g.r.IntN(len(ex))]
}

func (g *generator) size(f int) int64 {
	s, _ := g.o.Size(f)
	return s
}

// block picks a block index near a file of size bytes, now and then further.
// In a huge sparse file it stays mostly near the start or the end, where the
// data is.
func (g *generator) block(size int64) int64 {
	nb := ceilDiv(size)
	switch {
	case g.pct(10):
		return g.r.Int64N(64)
	case nb > 64 && g.pct(40):
		return g.r.Int64N(64)
	case nb > 64 && g.pct(60):
		return max(0, nb-g.r.Int64N(8))
	}
	return g.r.Int64N(nb + 2)
}

func (g *generator) small() int64 { return 1 + g.r.Int64N(16) }

// offset picks an offset biased to block boundaries, EOF and small files.
func (g *generator) offset(size int64) int64 {
	switch r := g.r.IntN(100); {
	case r < 2:
		return Huge + g.r.Int64N(4)*B + g.r.Int64N(2)*g.small()
	case r < 45:
		return g.block(size) * B
	case r < 60:
		if g.pct(50) {
			return g.block(size)*B + g.small()
		}
		return max(0, (g.block(size)+1)*B-g.small())
	case r < 75:
		switch g.r.IntN(4) {
		case 0:
			return size
		case 1:
			return max(0, size-g.small())
		case 2:
			return size / B * B
		default:
			return ceilDiv(size) * B
		}
	default:
		return g.r.Int64N(max(size, B) + 2*B)
	}
}

// length picks a length from 1 byte to ~16 blocks, biased to whole blocks.
func (g *generator) length() int64 {
	switch r := g.r.IntN(100); {
	case r < 40:
		if g.pct(50) {
			return (1 + g.r.Int64N(3)) * B
		}
		return (1 + g.r.Int64N(16)) * B
	case r < 55:
		return 1 + g.r.Int64N(64)
	case r < 65:
		return B + g.r.Int64N(33) - 16
	default:
		return 1 + g.r.Int64N(16*B)
	}
}

// invalid now and then replaces an offset or length by a bad one.
func (g *generator) invalid(off, n *int64) {
	if !g.pct(3) {
		return
	}
	switch g.r.IntN(4) {
	case 0:
		*off = -B
	case 1:
		*off = -1
	case 2:
		*n = -1
	default:
		*n = 0
	}
}

// rangeIn picks [off, off+n) for a ranged op on f, sometimes ending at EOF.
func (g *generator) rangeIn(f int) (off, n int64) {
	size := g.size(f)
	off, n = g.offset(size), g.length()
	if g.pct(15) && size > off {
		n = size - off
	}
	if off >= Huge && g.pct(50) {
		n = Huge // punch/unshare a huge range: nothing there to allocate
	}
	g.invalid(&off, &n)
	return off, n
}

func (g *generator) seed() uint32 {
	switch r := g.r.IntN(100); {
	case r < 8:
		return 0
	case r < 60:
		return 1 + g.r.Uint32N(6) // few seeds: equal blocks for dedupe
	default:
		return g.r.Uint32()
	}
}

func (g *generator) write() Op {
	f := g.r.IntN(NumFiles)
	if ex := g.existing(); len(ex) > 0 && g.pct(80) {
		f = ex[g.r.IntN(len(ex))]
	}
	if !g.o.Exists(f) && g.pct(30) {
		return Write(f, 0, 0, 0) // creates an empty file: a clone or copy destination
	}
	size := g.size(f)
	off, n := g.offset(size), g.length()
	if g.pct(2) {
		off = -1
	}
	return Write(f, off, n, g.seed())
}

func (g *generator) truncate() Op {
	f := g.file()
	size := g.size(f)
	var s int64
	switch r := g.r.IntN(100); {
	case r < 10:
		s = 0
	case r < 35:
		s = max(0, size+g.r.Int64N(2*B)-B)
	case r < 55:
		s = g.block(size) * B
	case r < 75:
		s = size / 2
	case r < 85:
		s = g.offset(size)
	case r < 97:
		// Another file's size (give or take whole blocks): equal sizes let
		// ranges end at both EOFs with equal alignment.
		other := g.size(g.file())
		s = max(0, other+(g.r.Int64N(3)-1)*B)
	case r < 99:
		s = Huge + g.small()
	default:
		s = -1
	}
	return Truncate(f, s)
}

// pair picks source and destination, the same file about a fifth of the time.
func (g *generator) pair() (int, int) {
	src, dst := g.file(), g.file()
	if g.pct(20) {
		dst = src
	}
	return src, dst
}

// nonOverlapping moves dstOff off [srcOff, srcOff+n) for a same-file op,
// keeping dstOff's alignment within a block.
func (g *generator) nonOverlapping(srcOff, n, dstOff int64) int64 {
	if !overlap(srcOff, dstOff, n) {
		return dstOff
	}
	if srcOff >= n+B && g.pct(50) {
		return dstOff % B
	}
	return (srcOff+n)/B*B + B + dstOff%B
}

func (g *generator) clone() Op {
	src, dst := g.pair()
	ssize, dsize := g.size(src), g.size(dst)
	if g.pct(10) {
		// Whole-file clone onto a file no longer than src: files of equal
		// size make ranges that end at both EOFs possible later.
		for _, d := range g.r.Perm(NumFiles) {
			if s, err := g.o.Size(d); err == nil && d != src && s <= ssize {
				return Clone(src, d, 0, 0, 0)
			}
		}
	}
	srcOff := g.r.Int64N(ceilDiv(ssize)+1) * B
	var n int64
	switch r := g.r.IntN(100); {
	case r < 45:
		n = max(1, (ssize-srcOff)/B)
		n = (1 + g.r.Int64N(min(n, 16))) * B
	case r < 75:
		n = ssize - srcOff
	case r < 85:
		n = 0
	default:
		n = g.length()
	}
	dstOff := g.block(dsize) * B
	if n%B != 0 && g.pct(60) { // unaligned to EOF: end at or past dst EOF
		dstOff = (ceilDiv(max(dsize-n, 0)) + g.r.Int64N(2)) * B
		if e := dsize - n; e >= 0 && e%B == 0 && g.pct(50) {
			dstOff = e // exactly at dst EOF: the boundary case of the EOF rule
		} else if src != dst && g.allowed(KTruncate) && g.pct(60) {
			// Make it so: truncate dst to end where the range will, then clone.
			off := g.block(dsize) * B
			g.follow = func() Op { return Clone(src, dst, srcOff, n, off) }
			return Truncate(dst, off+n)
		}
	}
	if src == dst {
		span := n
		if n == 0 {
			span = max(ssize-srcOff, 1)
		}
		dstOff = g.nonOverlapping(srcOff, span, dstOff)
	}
	if g.pct(5) {
		if g.pct(50) {
			srcOff += g.small()
		} else {
			dstOff += g.small()
		}
	}
	g.invalid(&srcOff, &n)
	return Clone(src, dst, srcOff, n, dstOff)
}

func (g *generator) dedupe() Op {
	src, dst := g.pair()
	ssize := g.size(src)
	srcOff := g.r.Int64N(ceilDiv(ssize)+1) * B
	if g.pct(10) {
		srcOff = g.block(ssize) * B
	}
	n := g.length()
	switch {
	case g.pct(25):
		n = ssize - srcOff
	case g.pct(50):
		n = (1 + g.r.Int64N(8)) * B
	case g.pct(3):
		n = Huge
	}
	n = max(n, 1)
	if n > maxDedupe && ssize-srcOff > maxDedupe {
		n = maxDedupe // the engine compares every byte, holes included
	}
	if g.pct(60) {
		if op, ok := g.matchingDedupe(src, srcOff, n); ok {
			return op
		}
	}
	dstOff := g.block(g.size(dst)) * B
	if src == dst {
		dstOff = g.nonOverlapping(srcOff, n, dstOff)
	}
	if g.pct(3) {
		dstOff += g.small()
	}
	return Dedupe(src, dst, srcOff, n, dstOff)
}

// maxDedupe bounds generated dedupe lengths (after clamping to EOF).
const maxDedupe = 256 * B

// matchingDedupe looks for a destination range whose bytes equal the source
// range, so dedupe actually shares something.
func (g *generator) matchingDedupe(src int, srcOff, n int64) (Op, bool) {
	var found []Op
	for dst := range NumFiles {
		if !g.o.Exists(dst) {
			continue
		}
		for idx := range min(ceilDiv(g.size(dst)), 80) {
			dstOff := idx * B
			if dst == src && overlap(srcOff, dstOff, max(n, B)) {
				continue
			}
			if got, err := g.o.dedupePrep(src, dst, srcOff, n, dstOff); err == nil && got > 0 {
				found = append(found, Dedupe(src, dst, srcOff, n, dstOff))
			}
		}
	}
	if len(found) == 0 {
		return Op{}, false
	}
	return found[g.r.IntN(len(found))], true
}

// sameResidue finds another existing file at least n bytes long whose size has the
// same offset within a block as size (so a range can end at both EOFs with
// equal alignment).
func (g *generator) sameResidue(src int, size, n int64) (int, bool) {
	var found []int
	for f := range NumFiles {
		if s, err := g.o.Size(f); err == nil && f != src && s >= n && s%B == size%B {
			found = append(found, f)
		}
	}
	if len(found) == 0 {
		return 0, false
	}
	return found[g.r.IntN(len(found))], true
}

func (g *generator) copy() Op {
	src, dst := g.pair()
	ssize, dsize := g.size(src), g.size(dst)
	srcOff := g.offset(ssize)
	if srcOff >= Huge {
		srcOff = g.block(ssize) * B
	}
	dstOff := g.offset(dsize)
	if g.pct(50) {
		dstOff = g.block(dsize)*B + srcOff%B // same alignment: blocks get shared
	}
	n := g.length()
	switch {
	case g.pct(20) && ssize > srcOff:
		n = ssize - srcOff
	case g.pct(3):
		n = Huge // clamped to the source EOF
	}
	if g.pct(25) && ssize > srcOff {
		// End exactly at the destination's EOF, where the EOF rule for
		// sharing a partial last block is decided.
		if ssize%B != 0 && g.pct(70) {
			n = max(n, ssize-srcOff) // reach src EOF
			d, ok := g.sameResidue(src, ssize, ssize-srcOff)
			if !ok && dst != src && g.o.Exists(dst) && g.allowed(KTruncate) {
				// Make one: give dst a size with src's residue, then copy.
				want := (max(ceilDiv(dsize), ceilDiv(ssize-srcOff))+g.r.Int64N(2))*B + ssize%B
				d := dst
				g.follow = func() Op {
					m := ssize - srcOff
					return Copy(src, d, srcOff, n, g.size(d)-m)
				}
				return Truncate(dst, want)
			}
			if ok {
				dst, dsize = d, g.size(d)
			}
		}
		if e := dsize - min(n, ssize-srcOff); e >= 0 && (src != dst || !overlap(srcOff, e, min(n, ssize-srcOff))) {
			dstOff = e
		}
	}
	if src == dst {
		dstOff = g.nonOverlapping(srcOff, max(1, min(n, ssize-srcOff)), dstOff)
	}
	if srcOff%B != dstOff%B && min(n, ssize-srcOff) > 64*B {
		n = 64 * B // a misaligned copy writes every byte: keep it small
	}
	g.invalid(&srcOff, &n)
	return Copy(src, dst, srcOff, n, dstOff)
}
