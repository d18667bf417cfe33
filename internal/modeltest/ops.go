package modeltest

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Kind is an operation kind.
type Kind uint8

// Operation kinds.
const (
	KWrite Kind = iota + 1
	KRead
	KTruncate
	KPunch
	KZero
	KAlloc
	KClone
	KDedupe
	KCopy
	KUnshare
	KSync
	KReopen
	KRemove
	KRename
	KDetach
	KCloseDetached
)

var kindNames = map[Kind]string{
	KWrite: "write", KRead: "read", KTruncate: "truncate", KPunch: "punch", KZero: "zero",
	KAlloc: "alloc", KClone: "clone", KDedupe: "dedupe", KCopy: "copy", KUnshare: "unshare",
	KSync: "sync", KReopen: "reopen", KRemove: "remove", KRename: "rename", KDetach: "detach",
	KCloseDetached: "closedetached",
}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// ParseKinds parses a comma-separated list of kind names ("dedupe,copy").
func ParseKinds(list string) ([]Kind, error) {
	var out []Kind
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		found := false
		for k, n := range kindNames {
			if n == name {
				out, found = append(out, k), true
			}
		}
		if !found {
			return nil, fmt.Errorf("modeltest: unknown op kind %q", name)
		}
	}
	return out, nil
}

// Op is one step of a sequence. Which fields matter depends on Kind; build
// Ops with the constructors (Write, Clone, ...), whose calls are also what
// Op.String prints.
type Op struct {
	Kind   Kind
	F      int    // file index (the source for clone, dedupe, copy; old name for rename)
	Dst    int    // destination file index (clone, dedupe, copy, rename)
	Slot   int    // detached slot
	Off    int64  // offset in F; the new size for truncate
	N      int64  // length
	DstOff int64  // offset in Dst
	Seed   uint32 // write data: Pattern(Seed, N)
	Keep   bool   // allocate: keep size
}

// Write writes Pattern(seed, n) at off of file f.
func Write(f int, off, n int64, seed uint32) Op {
	return Op{Kind: KWrite, F: f, Off: off, N: n, Seed: seed}
}

// Read reads [off, off+n) of f and compares the bytes.
func Read(f int, off, n int64) Op { return Op{Kind: KRead, F: f, Off: off, N: n} }

// Truncate sets the size of f.
func Truncate(f int, size int64) Op { return Op{Kind: KTruncate, F: f, Off: size} }

// Punch punches a hole.
func Punch(f int, off, n int64) Op { return Op{Kind: KPunch, F: f, Off: off, N: n} }

// Zero is fallocate ZERO_RANGE (extending the size).
func Zero(f int, off, n int64) Op { return Op{Kind: KZero, F: f, Off: off, N: n} }

// Alloc is fallocate mode 0 (keep=false) or KEEP_SIZE.
func Alloc(f int, off, n int64, keep bool) Op {
	return Op{Kind: KAlloc, F: f, Off: off, N: n, Keep: keep}
}

// Clone is a clone range (FICLONERANGE).
func Clone(src, dst int, srcOff, n, dstOff int64) Op {
	return Op{Kind: KClone, F: src, Dst: dst, Off: srcOff, N: n, DstOff: dstOff}
}

// Dedupe is a dedupe range (FIDEDUPERANGE).
func Dedupe(src, dst int, srcOff, n, dstOff int64) Op {
	return Op{Kind: KDedupe, F: src, Dst: dst, Off: srcOff, N: n, DstOff: dstOff}
}

// Copy is copy_file_range.
func Copy(src, dst int, srcOff, n, dstOff int64) Op {
	return Op{Kind: KCopy, F: src, Dst: dst, Off: srcOff, N: n, DstOff: dstOff}
}

// Unshare is fallocate UNSHARE_RANGE.
func Unshare(f int, off, n int64) Op { return Op{Kind: KUnshare, F: f, Off: off, N: n} }

// Sync is fsync of f.
func Sync(f int) Op { return Op{Kind: KSync, F: f} }

// Reopen closes and reopens the filesystem.
func Reopen() Op { return Op{Kind: KReopen} }

// Remove unlinks f.
func Remove(f int) Op { return Op{Kind: KRemove, F: f} }

// Rename renames old to new, replacing new.
func Rename(old, new int) Op { return Op{Kind: KRename, F: old, Dst: new} }

// Detach removes f while keeping it open in slot.
func Detach(f, slot int) Op { return Op{Kind: KDetach, F: f, Slot: slot} }

// CloseDetached closes the removed-but-open file in slot.
func CloseDetached(slot int) Op { return Op{Kind: KCloseDetached, Slot: slot} }

// String renders op as the Go constructor call that builds it, with the
// package qualifier "mt." (import modeltest as mt in regression tests).
func (op Op) String() string {
	n := num
	switch op.Kind {
	case KWrite:
		return fmt.Sprintf("mt.Write(%d, %s, %s, %d)", op.F, n(op.Off), n(op.N), op.Seed)
	case KRead:
		return fmt.Sprintf("mt.Read(%d, %s, %s)", op.F, n(op.Off), n(op.N))
	case KTruncate:
		return fmt.Sprintf("mt.Truncate(%d, %s)", op.F, n(op.Off))
	case KPunch:
		return fmt.Sprintf("mt.Punch(%d, %s, %s)", op.F, n(op.Off), n(op.N))
	case KZero:
		return fmt.Sprintf("mt.Zero(%d, %s, %s)", op.F, n(op.Off), n(op.N))
	case KAlloc:
		return fmt.Sprintf("mt.Alloc(%d, %s, %s, %t)", op.F, n(op.Off), n(op.N), op.Keep)
	case KClone:
		return fmt.Sprintf("mt.Clone(%d, %d, %s, %s, %s)", op.F, op.Dst, n(op.Off), n(op.N), n(op.DstOff))
	case KDedupe:
		return fmt.Sprintf("mt.Dedupe(%d, %d, %s, %s, %s)", op.F, op.Dst, n(op.Off), n(op.N), n(op.DstOff))
	case KCopy:
		return fmt.Sprintf("mt.Copy(%d, %d, %s, %s, %s)", op.F, op.Dst, n(op.Off), n(op.N), n(op.DstOff))
	case KUnshare:
		return fmt.Sprintf("mt.Unshare(%d, %s, %s)", op.F, n(op.Off), n(op.N))
	case KSync:
		return fmt.Sprintf("mt.Sync(%d)", op.F)
	case KReopen:
		return "mt.Reopen()"
	case KRemove:
		return fmt.Sprintf("mt.Remove(%d)", op.F)
	case KRename:
		return fmt.Sprintf("mt.Rename(%d, %d)", op.F, op.Dst)
	case KDetach:
		return fmt.Sprintf("mt.Detach(%d, %d)", op.F, op.Slot)
	case KCloseDetached:
		return fmt.Sprintf("mt.CloseDetached(%d)", op.Slot)
	}
	return fmt.Sprintf("mt.Op{Kind: %d}", op.Kind)
}

// num renders v in units of mt.B where that reads better: 8192 -> "2*mt.B",
// 4196 -> "mt.B+100", 100 -> "100".
func num(v int64) string {
	if v < B {
		return strconv.FormatInt(v, 10)
	}
	q, r := v/B, v%B
	var sb strings.Builder
	if q == 1 {
		sb.WriteString("mt.B")
	} else {
		fmt.Fprintf(&sb, "%d*mt.B", q)
	}
	if r != 0 {
		fmt.Fprintf(&sb, "+%d", r)
	}
	return sb.String()
}

// FormatOps renders a sequence one op per line, each followed by a comma, so
// it pastes into a []mt.Op literal.
func FormatOps(ops []Op) string {
	var sb strings.Builder
	for _, op := range ops {
		sb.WriteString("\t")
		sb.WriteString(op.String())
		sb.WriteString(",\n")
	}
	return sb.String()
}

// Pattern returns the n bytes written by a Write with seed: zeros for seed 0,
// otherwise pseudo-random bytes that depend only on seed and the position in
// the buffer, so equal writes at block-aligned offsets give equal blocks
// (which is what dedupe needs to find).
func Pattern(seed uint32, n int64) []byte {
	p := make([]byte, n)
	if seed == 0 {
		return p
	}
	var w [8]byte
	for i := int64(0); i < n; i += 8 {
		binary.LittleEndian.PutUint64(w[:], splitmix(uint64(seed)<<40^uint64(i)))
		copy(p[i:], w[:])
	}
	return p
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Result is what an operation returned.
type Result struct {
	Err  error
	N    int64  // dedupe and copy
	Data []byte // read
}

// applyOracle runs op on the oracle: the expected result. Err is
// ErrUnmodelled (and o unchanged) when the model declines op.
func (op Op) applyOracle(o *Oracle) Result {
	var r Result
	switch op.Kind {
	case KWrite:
		if op.N < 0 {
			return Result{Err: errInval}
		}
		r.Err = o.Write(op.F, op.Off, Pattern(op.Seed, op.N))
	case KRead:
		r.Data, r.Err = o.Read(op.F, op.Off, int(op.N))
	case KTruncate:
		r.Err = o.Truncate(op.F, op.Off)
	case KPunch:
		r.Err = o.PunchHole(op.F, op.Off, op.N)
	case KZero:
		r.Err = o.ZeroRange(op.F, op.Off, op.N)
	case KAlloc:
		r.Err = o.Allocate(op.F, op.Off, op.N, op.Keep)
	case KClone:
		r.Err = o.CloneRange(op.F, op.Dst, op.Off, op.N, op.DstOff)
	case KDedupe:
		r.N, r.Err = o.DedupeRange(op.F, op.Dst, op.Off, op.N, op.DstOff)
	case KCopy:
		r.N, r.Err = o.CopyRange(op.F, op.Dst, op.Off, op.N, op.DstOff)
	case KUnshare:
		r.Err = o.Unshare(op.F, op.Off, op.N)
	case KSync:
		r.Err = o.Sync(op.F)
	case KReopen:
		o.Reopen()
	case KRemove:
		r.Err = o.Remove(op.F)
	case KRename:
		r.Err = o.Rename(op.F, op.Dst)
	case KDetach:
		r.Err = o.Detach(op.F, op.Slot)
	case KCloseDetached:
		o.CloseDetached(op.Slot)
	default:
		panic(fmt.Sprintf("modeltest: unknown op kind %d", op.Kind))
	}
	return r
}

// valid reports whether op's file indices, slot and buffer sizes are in
// range; the runner and shrinker never run an op that is not.
func (op Op) valid() bool {
	if op.F < 0 || op.F >= NumFiles || op.Dst < 0 || op.Dst >= NumFiles || op.Slot < 0 || op.Slot >= NumSlots {
		return false
	}
	switch op.Kind {
	case KWrite, KRead:
		return op.N <= MaxNewBlocks*B // buffers are materialised
	}
	return op.Kind >= KWrite && op.Kind <= KCloseDetached
}

// applyTarget runs op on t (det is t as a Detacher, or nil).
func (op Op) applyTarget(t Target, det Detacher) Result {
	var r Result
	name, dst := FileName(op.F), FileName(op.Dst)
	switch op.Kind {
	case KWrite:
		if op.N < 0 {
			return Result{Err: errInval}
		}
		r.Err = t.WriteAt(name, op.Off, Pattern(op.Seed, op.N))
	case KRead:
		if op.N < 0 {
			return Result{Err: errInval}
		}
		r.Data, r.Err = t.ReadAt(name, op.Off, int(op.N))
	case KTruncate:
		r.Err = t.Truncate(name, op.Off)
	case KPunch:
		r.Err = t.PunchHole(name, op.Off, op.N)
	case KZero:
		r.Err = t.ZeroRange(name, op.Off, op.N)
	case KAlloc:
		r.Err = t.Allocate(name, op.Off, op.N, op.Keep)
	case KClone:
		r.Err = t.CloneRange(name, dst, op.Off, op.N, op.DstOff)
	case KDedupe:
		r.N, r.Err = t.DedupeRange(name, dst, op.Off, op.N, op.DstOff)
	case KCopy:
		r.N, r.Err = t.CopyRange(name, dst, op.Off, op.N, op.DstOff)
	case KUnshare:
		r.Err = t.Unshare(name, op.Off, op.N)
	case KSync:
		r.Err = t.Sync(name)
	case KReopen:
		r.Err = t.Reopen()
	case KRemove:
		r.Err = t.Remove(name)
	case KRename:
		r.Err = t.Rename(name, dst)
	case KDetach:
		r.Err = det.Detach(name, op.Slot)
	case KCloseDetached:
		r.Err = det.CloseDetached(op.Slot)
	}
	return r
}
