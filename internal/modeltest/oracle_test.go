package modeltest

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

// Hand-computed expectations: each test spells out what the documented
// semantics give, so the oracle cannot silently agree with a wrong engine.

// step applies op to o and checks its error, returned count and UsedBytes
// (in blocks; -1 skips).
func step(t *testing.T, o *Oracle, op Op, wantErr error, wantN int64, wantUsed int64) {
	t.Helper()
	r := op.applyOracle(o)
	if !sameError(wantErr, r.Err) {
		t.Fatalf("%s: err %v, want %v", op, r.Err, wantErr)
	}
	if (op.Kind == KDedupe || op.Kind == KCopy) && r.N != wantN {
		t.Fatalf("%s: n = %d, want %d", op, r.N, wantN)
	}
	if wantUsed >= 0 && o.UsedBytes() != wantUsed*B {
		t.Fatalf("after %s: used %d blocks, want %d", op, o.UsedBytes()/B, wantUsed)
	}
}

func ok(t *testing.T, o *Oracle, op Op, wantUsed int64) {
	t.Helper()
	step(t, o, op, nil, 0, wantUsed)
}

func wantBytes(t *testing.T, o *Oracle, f int, off int64, want []byte) {
	t.Helper()
	got, err := o.Read(f, off, len(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("f%d [%d,+%d): %s", f, off, len(want), diffBytes(got, want, off))
	}
}

func wantSize(t *testing.T, o *Oracle, f int, want int64) {
	t.Helper()
	if got, err := o.Size(f); err != nil || got != want {
		t.Fatalf("f%d size %d (%v), want %d", f, got, err, want)
	}
}

// wantBlocks checks the block map of f: "w" written, "u" unwritten, "-"
// hole, uppercase when shared (refs > 1).
func wantBlocks(t *testing.T, o *Oracle, f int, want string) {
	t.Helper()
	m := map[int64]BlockState{}
	last := int64(-1)
	for _, b := range o.Blocks(f) {
		m[b.Index] = b
		last = b.Index
	}
	got := []byte{}
	for idx := int64(0); idx <= last || idx < int64(len(want)); idx++ {
		b, mapped := m[idx]
		c := byte('-')
		switch {
		case !mapped:
		case b.Unwritten:
			c = 'u'
		default:
			c = 'w'
		}
		if mapped && b.Refs > 1 {
			c -= 'a' - 'A'
		}
		got = append(got, c)
	}
	if string(got) != want {
		t.Fatalf("f%d blocks %q, want %q (%s)", f, got, want, o.Describe(f))
	}
}

func sameID(t *testing.T, o *Oracle, f int, idx int64, g int, gidx int64, want bool) {
	t.Helper()
	id := func(f int, idx int64) int {
		for _, b := range o.Blocks(f) {
			if b.Index == idx {
				return b.ID
			}
		}
		return -1
	}
	if got := id(f, idx) == id(g, gidx); got != want {
		t.Fatalf("f%d block %d and f%d block %d same identity = %t, want %t", f, idx, g, gidx, got, want)
	}
}

func TestOracleCopyOnWrite(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, 2*B, 1), 2)
	ok(t, o, Write(1, 0, 0, 0), 2)    // creates an empty f1
	ok(t, o, Clone(0, 1, 0, 0, 0), 2) // whole file
	wantSize(t, o, 1, 2*B)
	wantBlocks(t, o, 1, "WW")
	if o.SharedBytes() != 2*B || o.LogicalBytes() != 4*B {
		t.Fatalf("shared %d logical %d", o.SharedBytes(), o.LogicalBytes())
	}
	ok(t, o, Write(1, 100, 10, 2), 3) // block 0 of f1 copied
	wantBlocks(t, o, 0, "wW")
	wantBlocks(t, o, 1, "wW")
	sameID(t, o, 0, 1, 1, 1, true)
	sameID(t, o, 0, 0, 1, 0, false)
	wantBytes(t, o, 0, 0, Pattern(1, 2*B))
	want := Pattern(1, 2*B)
	copy(want[100:], Pattern(2, 10))
	wantBytes(t, o, 1, 0, want)
	ok(t, o, Write(1, 200, 10, 3), 3) // now unshared: in place
	sameID(t, o, 1, 1, 0, 1, true)
}

func TestOracleTruncate(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, B+100, 1), 2)
	ok(t, o, Write(1, 0, 0, 0), 2)
	ok(t, o, Clone(0, 1, 0, 0, 0), 2) // unaligned length at src EOF into an empty file
	wantBlocks(t, o, 1, "WW")
	ok(t, o, Truncate(1, 50), 3) // block 1 dropped; block 0 zeroed from 50: copy on write
	wantBlocks(t, o, 0, "ww")
	wantBlocks(t, o, 1, "w")
	ok(t, o, Truncate(1, 3*B), 3) // grow: no allocation, zeros
	want := make([]byte, 3*B)
	copy(want, Pattern(1, 50))
	wantBytes(t, o, 1, 0, want)
	wantBytes(t, o, 0, 0, Pattern(1, B+100))
	step(t, o, Truncate(1, -1), syscall.EINVAL, 0, 3)
	step(t, o, Truncate(4, 0), syscall.ENOENT, 0, 3)

	// Bytes past EOF in the last block stay zero for a later extension.
	ok(t, o, Write(2, 0, 100, 1), 4)
	ok(t, o, Truncate(2, 50), 4) // written, unshared: zeroed in place
	ok(t, o, Truncate(2, 200), 4)
	want = make([]byte, 200)
	copy(want, Pattern(1, 50))
	wantBytes(t, o, 2, 0, want)

	// Growing keeps preallocated blocks beyond EOF; shrinking drops them.
	ok(t, o, Alloc(2, 4*B, B, true), 5)
	wantSize(t, o, 2, 200)
	ok(t, o, Truncate(2, 4*B), 5)
	ok(t, o, Truncate(2, 4*B), 5)
	wantBlocks(t, o, 2, "w---u")
	ok(t, o, Truncate(2, 100), 4)
	wantBlocks(t, o, 2, "w")
}

func TestOraclePunchZeroAllocate(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, 4*B, 1), 4)
	ok(t, o, Punch(0, 100, 2*B), 3) // [100, 8292): block 1 dropped, edges zeroed
	wantSize(t, o, 0, 4*B)
	wantBlocks(t, o, 0, "w-ww")
	want := Pattern(1, 4*B)
	clear(want[100 : 2*B+100])
	wantBytes(t, o, 0, 0, want)

	ok(t, o, Zero(0, 3*B, 2*B), 4) // block 3 replaced, block 4 allocated: unwritten
	wantSize(t, o, 0, 5*B)
	wantBlocks(t, o, 0, "w-wuu")
	clear(want[3*B:])
	want = append(want, make([]byte, B)...)
	wantBytes(t, o, 0, 0, want)

	ok(t, o, Zero(0, 2*B+10, 20), 4) // partial, written: zeroed in place
	ok(t, o, Zero(0, 3*B+10, 20), 4) // partial, unwritten: untouched
	wantBlocks(t, o, 0, "w-wuu")

	ok(t, o, Alloc(0, 6*B, 1, true), 5) // beyond EOF, keep size
	wantSize(t, o, 0, 5*B)
	wantBlocks(t, o, 0, "w-wuu-u")
	ok(t, o, Punch(0, 6*B, B), 4)        // punch is not clamped to EOF
	ok(t, o, Alloc(0, B-1, 2, false), 5) // block 0 exists, block 1 hole: allocated
	wantBlocks(t, o, 0, "wuwuu")
	wantSize(t, o, 0, 5*B)
	ok(t, o, Alloc(0, 5*B+10, 10, false), 6)
	wantSize(t, o, 0, 5*B+20)

	step(t, o, Punch(0, 0, 0), syscall.EINVAL, 0, 6)
	step(t, o, Zero(0, -1, 10), syscall.EINVAL, 0, 6)
	step(t, o, Alloc(0, 0, -5, false), syscall.EINVAL, 0, 6)
	step(t, o, Punch(3, 0, 1), syscall.ENOENT, 0, 6)

	// Partial punch of a shared written block copies it.
	ok(t, o, Write(1, 0, B, 2), 7)
	step(t, o, Clone(1, 2, 0, 0, 0), syscall.ENOENT, 0, 7) // the destination must exist
	ok(t, o, Write(2, 0, 0, 0), 7)
	ok(t, o, Clone(1, 2, 0, 0, 0), 7)
	ok(t, o, Punch(2, 0, 10), 8)
	wantBytes(t, o, 1, 0, Pattern(2, B))
	// Whole-block zero range of a shared block: new unwritten identity.
	ok(t, o, Write(3, 0, 0, 0), 8)
	ok(t, o, Clone(1, 3, 0, 0, 0), 8)
	ok(t, o, Zero(3, 0, B), 9)
	wantBlocks(t, o, 3, "u")
	wantBlocks(t, o, 1, "w")
}

func TestOracleCloneRange(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, B+1, 1), 2)
	ok(t, o, Write(1, 0, 3*B, 2), 5)
	for _, bad := range []Op{
		Clone(0, 1, 1, B, 0),          // unaligned source offset
		Clone(0, 1, 0, B, 100),        // unaligned destination offset
		Clone(0, 1, 0, 2*B, 0),        // beyond source EOF
		Clone(0, 1, 0, B+1, 0),        // ends at src EOF but inside dst
		Clone(0, 1, 0, 100, 2*B),      // unaligned, not at src EOF
		Clone(0, 1, 0, -1, 0),         // negative
		Clone(0, 1, 3*B, 0, 0),        // to EOF from beyond EOF
		Clone(1, 1, 0, B, 0),          // same range
		Clone(1, 1, 0, 2*B, B),        // same file, overlapping
		Clone(0, 1, Huge, 0, 0),       // beyond EOF
		Clone(0, 1, 0, Huge, 0),       // beyond EOF
		Clone(0, 1, -B, B, 0),         // negative
		Clone(0, 1, B, B+1, Huge*B+3), // unaligned, overflowing nonsense
		Clone(0, 1, 2*B, 0, 0),        // to EOF, starting past EOF
	} {
		step(t, o, bad, syscall.EINVAL, 0, 5)
	}
	step(t, o, Clone(0, 5, 0, 0, 0), syscall.ENOENT, 0, 5)
	ok(t, o, Clone(0, 1, B, 0, 3*B), 5) // to EOF: 1 byte, shared past dst EOF
	wantBlocks(t, o, 1, "wwwW")
	wantSize(t, o, 1, 3*B+1)
	ok(t, o, Clone(0, 1, 0, B+1, 2*B), 4) // ends at both EOFs: old block 2 released
	wantBlocks(t, o, 1, "wwWW")
	wantSize(t, o, 1, 3*B+1)
	wantBytes(t, o, 1, 2*B, Pattern(1, B+1))
	ok(t, o, Clone(1, 1, 0, B, B), 3) // same file, disjoint
	wantBlocks(t, o, 1, "WWWW")
	ok(t, o, Clone(0, 1, B, 0, 5*B), 3) // to EOF (1 byte) past dst EOF: hole in between
	wantBlocks(t, o, 1, "WWWW-W")
	wantSize(t, o, 1, 5*B+1)
	want := append(make([]byte, B), Pattern(1, B+1)[B:]...)
	wantBytes(t, o, 1, 4*B, want)
	ok(t, o, Clone(0, 0, 0, B, 2*B), 3)
	wantBlocks(t, o, 0, "WWW")
	wantSize(t, o, 0, 3*B)
	ok(t, o, Clone(0, 0, 3*B, 0, 0), 3) // nothing to clone at EOF
	// Cloning holes makes holes.
}

func TestOracleDedupeRange(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, 2*B, 1), 2)
	ok(t, o, Write(1, 0, 2*B, 1), 4) // same bytes, separate blocks
	step(t, o, Dedupe(0, 1, 0, 2*B, 0), nil, 2*B, 2)
	wantBlocks(t, o, 1, "WW")
	ok(t, o, Write(1, 0, 1, 3), 3)
	step(t, o, Dedupe(0, 1, 0, 2*B, 0), reflinkfs.ErrRangesDiffer, 0, 3)
	wantBlocks(t, o, 1, "wW")
	step(t, o, Dedupe(0, 1, B, B, B), nil, B, 3)   // already the same block
	step(t, o, Dedupe(0, 1, 0, 100, 0), nil, 0, 3) // rounded down to nothing
	step(t, o, Dedupe(0, 1, 0, 100, 1), syscall.EINVAL, 0, 3)
	step(t, o, Dedupe(0, 1, -B, B, 0), syscall.EINVAL, 0, 3)
	step(t, o, Dedupe(0, 1, 3*B, B, 0), nil, 0, 3) // clamped to nothing
	step(t, o, Dedupe(0, 4, 0, B, 0), syscall.ENOENT, 0, 3)
	step(t, o, Dedupe(0, 1, B, Huge, B), nil, B, 3) // clamped to both EOFs

	// A partial last block is shared only when the range ends at both EOFs.
	ok(t, o, Write(2, 0, B+10, 1), 5)
	ok(t, o, Write(3, 0, B+10, 1), 7)
	step(t, o, Dedupe(2, 3, B, 100, B), nil, 10, 6)
	wantBlocks(t, o, 3, "wW")
	ok(t, o, Write(3, B+10, 5, 0), 7)               // f3 grows by 5 zero bytes: a copy
	step(t, o, Dedupe(2, 3, 0, Huge, 0), nil, B, 6) // not at both EOFs: whole blocks only
	wantBlocks(t, o, 3, "Ww")

	// Holes and unwritten blocks read as zeros and dedupe with written zeros.
	ok(t, o, Write(4, 0, 2*B, 0), 8)   // written zeros
	ok(t, o, Write(5, 2*B-1, 1, 0), 9) // a hole, then written zeros
	step(t, o, Dedupe(5, 4, 0, 2*B, 0), nil, 2*B, 7)
	wantBlocks(t, o, 4, "-W")
}

func TestOracleCopyRange(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, 3*B, 1), 3)
	ok(t, o, Write(1, 0, 1, 2), 4)
	// Same alignment: head written, whole block shared, tail (not at EOF) written.
	step(t, o, Copy(0, 1, 100, 2*B, 100), nil, 2*B, 5)
	wantBlocks(t, o, 1, "wWw")
	wantSize(t, o, 1, 2*B+100)
	want := append(Pattern(2, 1), make([]byte, 99)...)
	want = append(want, Pattern(1, 3*B)[100:2*B+100]...)
	wantBytes(t, o, 1, 0, want)
	// Clamped to the source EOF, all whole blocks shared.
	step(t, o, Copy(0, 1, 0, 10*B, 3*B), nil, 3*B, 5)
	wantBlocks(t, o, 1, "wWwWWW")
	wantSize(t, o, 1, 6*B)
	// Misaligned: all written (block 0 of f1 is unshared: in place).
	step(t, o, Copy(0, 1, 1, B, 0), nil, B, 5)
	wantBytes(t, o, 1, 0, Pattern(1, B+1)[1:])
	step(t, o, Copy(0, 1, 5*B, 10, 0), nil, 0, 5) // nothing past EOF
	step(t, o, Copy(0, 5, 0, 10, 0), syscall.ENOENT, 0, 5)
	step(t, o, Copy(0, 1, 0, -1, 0), syscall.EINVAL, 0, 5)
	step(t, o, Copy(0, 0, 0, 2*B, B), syscall.EINVAL, 0, 5) // same file, overlapping

	// Tail at src EOF and not inside dst: shared.
	ok(t, o, Write(2, 0, B+10, 3), 7)
	ok(t, o, Write(3, 0, 1, 0), 8)
	step(t, o, Copy(2, 3, 0, B+10, 0), nil, B+10, 7)
	wantBlocks(t, o, 3, "WW")
	wantSize(t, o, 3, B+10)
	// Tail at src EOF but inside dst: written.
	ok(t, o, Write(3, 2*B, 1, 3), 8)
	step(t, o, Copy(2, 3, 0, B+10, 0), nil, B+10, 9)
	wantBlocks(t, o, 3, "Www")
	// Misaligned copy of a hole writes zeros (allocating).
	ok(t, o, Truncate(2, 4*B), 9)
	step(t, o, Copy(2, 3, 2*B, B, 3*B+1), nil, B, 11)
	wantBlocks(t, o, 3, "Wwwww")
	// Aligned copy of a hole keeps it a hole (and releases what was there).
	step(t, o, Copy(2, 3, 2*B, 2*B, 3*B), nil, 2*B, 9)
	wantBlocks(t, o, 3, "Www")
	wantSize(t, o, 3, 5*B)
}

func TestOracleNamespace(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, B, 1), 1)
	ok(t, o, Write(1, 0, 0, 0), 1)
	ok(t, o, Clone(0, 1, 0, 0, 0), 1)
	ok(t, o, Rename(0, 1), 1) // replaces f1: one reference left
	if o.Exists(0) || o.SharedBytes() != 0 {
		t.Fatal("rename over f1 left f0 or sharing")
	}
	ok(t, o, Rename(1, 1), 1)
	step(t, o, Rename(0, 2), syscall.ENOENT, 0, 1)
	ok(t, o, Write(2, 0, 2*B, 2), 3)
	ok(t, o, Detach(2, 0), 3) // removed but open: blocks stay
	if o.Exists(2) || !o.DetachedOpen(0) || o.DetachedSize(0) != 2*B {
		t.Fatal("detach")
	}
	if !bytes.Equal(o.ReadDetached(0, 0, 2*B), Pattern(2, 2*B)) {
		t.Fatal("detached bytes")
	}
	step(t, o, Detach(2, 0), syscall.ENOENT, 0, 3)
	ok(t, o, Reopen(), 1) // closes detached files
	ok(t, o, Write(3, 0, B, 3), 2)
	ok(t, o, Detach(3, 1), 2)
	ok(t, o, CloseDetached(1), 1)
	ok(t, o, Remove(1), 0)
	step(t, o, Remove(1), syscall.ENOENT, 0, 0)
	step(t, o, Sync(1), syscall.ENOENT, 0, 0)
	step(t, o, Write(4, -1, 10, 1), syscall.EINVAL, 0, 0)
	if !o.Exists(4) {
		t.Fatal("a failed write must still have created the file")
	}
}

func TestOracleUnshare(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, 2*B, 1), 2)
	ok(t, o, Alloc(0, 2*B, B, false), 3)
	ok(t, o, Write(1, 0, 0, 0), 3)
	ok(t, o, Clone(0, 1, 0, 0, 0), 3)
	wantBlocks(t, o, 1, "WWU")
	ok(t, o, Unshare(1, B, 2*B), 5)
	wantBlocks(t, o, 1, "Wwu")
	wantBlocks(t, o, 0, "Wwu")
	wantBytes(t, o, 1, 0, Pattern(1, 2*B))
	ok(t, o, Unshare(1, 0, Huge), 6)
	wantBlocks(t, o, 1, "wwu")
	step(t, o, Unshare(1, 0, 0), syscall.EINVAL, 0, 6)
}

func TestOracleUnmodelled(t *testing.T) {
	o := NewOracle()
	ok(t, o, Write(0, 0, 1, 1), 1)
	if r := Zero(0, 0, Huge).applyOracle(o); !errors.Is(r.Err, ErrUnmodelled) {
		t.Fatalf("huge zero range: %v", r.Err)
	}
	wantSize(t, o, 0, 1)
	wantBlocks(t, o, 0, "w")
}
