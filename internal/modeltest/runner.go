package modeltest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/reflinkfs/reflinkfs"
)

// Failure classes: what kind of check failed. The shrinker only accepts a
// smaller sequence that fails with the same class.
const (
	ClassSetup   = "setup"   // the factory could not make a target
	ClassPanic   = "panic"   // the target panicked
	ClassResult  = "result"  // an operation returned the wrong error, count or bytes
	ClassSize    = "size"    // a file's size (or existence) is wrong
	ClassContent = "content" // a file's bytes are wrong
	ClassSpace   = "space"   // UsedBytes or the other space figures are wrong
	ClassFiemap  = "fiemap"  // extent map disagrees with the modelled sharing
	ClassFsck    = "fsck"    // the consistency check is not clean
	ClassClose   = "close"   // closing the target failed
)

// Failure is a failed run.
type Failure struct {
	Seed  uint64 // generator seed (0 when the sequence was not generated)
	Ops   []Op   // the sequence run
	Step  int    // index in Ops of the last op applied; len(Ops) for the final check, -1 for setup
	Class string
	Msg   string
	// NotImplemented is set when the target answered ENOSYS: the engine is
	// not written yet, there is nothing to shrink.
	NotImplemented bool
}

func (f *Failure) Error() string {
	if f.Step < 0 {
		return "setup failed: " + f.Msg
	}
	var where string
	switch {
	case f.Step >= len(f.Ops):
		where = fmt.Sprintf("final check after %d ops", len(f.Ops))
	default:
		where = fmt.Sprintf("step %d of %d, %s", f.Step+1, len(f.Ops), f.Ops[f.Step])
	}
	return fmt.Sprintf("%s: %s: %s", where, f.Class, f.Msg)
}

// RunOptions tune a run.
type RunOptions struct {
	// CheckEvery runs Fiemap of every file and Check (fsck) every this many
	// steps (default 8), and always after Reopen and at the end.
	CheckEvery int
	// SkipSpaceStats skips the LogicalBytes/SharedBytes/ChecksumErrors check
	// of SpaceReporter targets (UsedBytes is always checked).
	SkipSpaceStats bool
	// Log, when set, receives one line per step (for replaying a seed with -v).
	Log func(format string, args ...any)
}

// Run applies ops to t and to a fresh oracle, comparing each result and the
// whole visible state after every step. t must be empty. It returns nil when
// everything matched.
func Run(t Target, ops []Op, opt RunOptions) *Failure {
	if opt.CheckEvery <= 0 {
		opt.CheckEvery = 8
	}
	r := &runner{t: t, o: NewOracle(), opt: opt, ops: ops}
	r.det, _ = t.(Detacher)
	if !opt.SkipSpaceStats {
		r.sp, _ = t.(SpaceReporter)
	}
	for i, op := range ops {
		if !op.valid() || r.det == nil && (op.Kind == KDetach || op.Kind == KCloseDetached) {
			continue
		}
		want := op.applyOracle(r.o)
		if errors.Is(want.Err, ErrUnmodelled) {
			r.logf("%3d %s: not modelled, sequence ends here", i, op)
			return nil
		}
		var got Result
		began := time.Now()
		if f := r.protect(i, func() *Failure { got = op.applyTarget(t, r.det); return nil }); f != nil {
			return f
		}
		r.logf("%3d %s -> %s (%v)", i, op, showResult(op, got), time.Since(began).Round(time.Microsecond))
		if msg := compareResult(op, want, got); msg != "" {
			return r.fail(i, ClassResult, msg, got.Err)
		}
		began = time.Now()
		if f := r.protect(i, func() *Failure { return r.checkState(i) }); f != nil {
			return f
		}
		if op.Kind == KReopen || (i+1)%opt.CheckEvery == 0 {
			if f := r.protect(i, func() *Failure { return r.checkDeep(i) }); f != nil {
				return f
			}
		}
		r.logf("    checks (%v)", time.Since(began).Round(time.Microsecond))
	}
	return r.protect(len(ops), func() *Failure { return r.checkDeep(len(ops)) })
}

// RunFresh makes a target with newTarget, runs ops on it and closes it.
func RunFresh(newTarget Factory, ops []Op, opt RunOptions) (fail *Failure) {
	t, err := newTarget()
	if err != nil {
		return &Failure{Ops: ops, Step: -1, Class: ClassSetup, Msg: err.Error(), NotImplemented: isErrno(err, syscall.ENOSYS)}
	}
	defer func() {
		c, ok := t.(io.Closer)
		if !ok {
			return
		}
		var cerr error
		func() {
			defer func() {
				if p := recover(); p != nil {
					cerr = fmt.Errorf("panic in Close: %v\n%s", p, debug.Stack())
				}
			}()
			cerr = c.Close()
		}()
		if cerr != nil && fail == nil {
			fail = &Failure{Ops: ops, Step: len(ops), Class: ClassClose, Msg: cerr.Error()}
		}
	}()
	return Run(t, ops, opt)
}

type runner struct {
	t   Target
	det Detacher
	sp  SpaceReporter
	o   *Oracle
	opt RunOptions
	ops []Op
}

func (r *runner) logf(format string, args ...any) {
	if r.opt.Log != nil {
		r.opt.Log(format, args...)
	}
}

func (r *runner) fail(step int, class, msg string, cause error) *Failure {
	return &Failure{Ops: r.ops, Step: step, Class: class, Msg: msg, NotImplemented: isErrno(cause, syscall.ENOSYS)}
}

// protect runs fn, turning a panic in the target into a Failure.
func (r *runner) protect(step int, fn func() *Failure) (f *Failure) {
	defer func() {
		if p := recover(); p != nil {
			f = r.fail(step, ClassPanic, fmt.Sprintf("%v\n%s", p, debug.Stack()), nil)
		}
	}()
	return fn()
}

func isErrno(err error, want syscall.Errno) bool {
	var e syscall.Errno
	return errors.As(err, &e) && e == want
}

// sameError compares errors the way the tester promises: by errno, or
// ErrRangesDiffer by identity.
func sameError(want, got error) bool {
	switch {
	case want == nil || got == nil:
		return want == nil && got == nil
	case errors.Is(want, reflinkfs.ErrRangesDiffer):
		return errors.Is(got, reflinkfs.ErrRangesDiffer)
	}
	var we syscall.Errno
	if errors.As(want, &we) {
		return isErrno(got, we)
	}
	return errors.Is(got, want)
}

// errName renders an error with its errno name, e.g. "EINVAL (clone: ...)".
func errName(err error) string {
	if err == nil {
		return "nil"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if name := unix.ErrnoName(e); name != "" {
			if err == error(e) {
				return name
			}
			return fmt.Sprintf("%s (%v)", name, err)
		}
	}
	return err.Error()
}

func showResult(op Op, res Result) string {
	switch {
	case res.Err != nil:
		return errName(res.Err)
	case op.Kind == KDedupe || op.Kind == KCopy:
		return fmt.Sprintf("n=%d", res.N)
	case op.Kind == KRead:
		return fmt.Sprintf("%d bytes", len(res.Data))
	}
	return "ok"
}

func compareResult(op Op, want, got Result) string {
	if !sameError(want.Err, got.Err) {
		return fmt.Sprintf("returned %s, want %s", errName(got.Err), errName(want.Err))
	}
	if want.Err != nil {
		return ""
	}
	if (op.Kind == KDedupe || op.Kind == KCopy) && got.N != want.N {
		return fmt.Sprintf("returned n=%d, want %d", got.N, want.N)
	}
	if op.Kind == KRead {
		if msg := diffBytes(got.Data, want.Data, op.Off); msg != "" {
			return "read " + msg
		}
	}
	return ""
}

// diffBytes describes the first difference between got and want, which hold
// the bytes at file offset base; "" when equal.
func diffBytes(got, want []byte, base int64) string {
	if bytes.Equal(got, want) {
		return ""
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	if i == len(got) || i == len(want) {
		return fmt.Sprintf("from offset %d: got %d bytes, want %d", base, len(got), len(want))
	}
	at := base + int64(i)
	return fmt.Sprintf("from offset %d: first difference at %d (block %d +%d): got % x, want % x",
		base, at, at/B, at%B, window(got, i), window(want, i))
}

func window(p []byte, i int) []byte { return p[i:min(len(p), i+8)] }

// fullCheckLimit: files up to this size are read whole after every step;
// bigger (sparse) ones are read at their first blocks, every mapped block and
// the last block.
const fullCheckLimit = 64 * B

// checkContent compares a file's bytes, read through read, with mf.
func checkContent(label string, mf *mfile, read func(off int64, n int) ([]byte, error)) (string, error) {
	ranges := [][2]int64{{0, mf.size}}
	if mf.size > fullCheckLimit {
		ranges = [][2]int64{{0, fullCheckLimit}, {(mf.size - 1) / B * B, mf.size}}
		for idx := range mf.blocks {
			if s := idx * B; s >= fullCheckLimit && s < mf.size {
				ranges = append(ranges, [2]int64{s, min(s+B, mf.size)})
			}
		}
	}
	for _, rg := range ranges {
		got, err := read(rg[0], int(rg[1]-rg[0]))
		if err != nil {
			return fmt.Sprintf("%s: read [%d,%d): %s", label, rg[0], rg[1], errName(err)), err
		}
		if msg := diffBytes(got, mf.read(rg[0], rg[1]-rg[0]), rg[0]); msg != "" {
			return fmt.Sprintf("%s: bytes %s", label, msg), nil
		}
	}
	return "", nil
}

// checkState compares every file's existence, size and bytes, the detached
// files, and the space figures.
func (r *runner) checkState(step int) *Failure {
	for f := range NumFiles {
		name := FileName(f)
		size, err := r.t.Size(name)
		mf := r.o.files[f]
		if mf == nil {
			if !isErrno(err, syscall.ENOENT) {
				return r.fail(step, ClassSize, fmt.Sprintf("%s: Size = %d, %s; want ENOENT (file must not exist)", name, size, errName(err)), err)
			}
			continue
		}
		if err != nil {
			return r.fail(step, ClassSize, fmt.Sprintf("%s: Size: %s", name, errName(err)), err)
		}
		if size != mf.size {
			return r.fail(step, ClassSize, fmt.Sprintf("%s: size %d, want %d (model %s)", name, size, mf.size, r.o.Describe(f)), nil)
		}
		msg, err := checkContent(name, mf, func(off int64, n int) ([]byte, error) { return r.t.ReadAt(name, off, n) })
		if msg != "" {
			return r.fail(step, ClassContent, msg+" (model "+r.o.Describe(f)+")", err)
		}
	}
	if r.det != nil {
		for s := range NumSlots {
			mf := r.o.detached[s]
			if mf == nil {
				continue
			}
			label := fmt.Sprintf("detached slot %d", s)
			size, err := r.det.SizeDetached(s)
			if err != nil || size != mf.size {
				return r.fail(step, ClassSize, fmt.Sprintf("%s: size %d, %s; want %d", label, size, errName(err), mf.size), err)
			}
			msg, err := checkContent(label, mf, func(off int64, n int) ([]byte, error) { return r.det.ReadDetached(s, off, n) })
			if msg != "" {
				return r.fail(step, ClassContent, msg, err)
			}
		}
	}
	used, err := r.t.UsedBytes()
	if err != nil || used != r.o.UsedBytes() {
		return r.fail(step, ClassSpace, fmt.Sprintf("UsedBytes = %d (%d blocks), %s; want %d (%d blocks)",
			used, used/B, errName(err), r.o.UsedBytes(), r.o.UsedBytes()/B), err)
	}
	if r.sp != nil {
		st, err := r.sp.SpaceStats()
		want := SpaceStats{LogicalBytes: r.o.LogicalBytes(), SharedBytes: r.o.SharedBytes()}
		if err != nil || st != want {
			return r.fail(step, ClassSpace, fmt.Sprintf("space stats %+v, %s; want %+v", st, errName(err), want), err)
		}
	}
	return nil
}

// fiemapBlock is one logical block as Fiemap reported it.
type fiemapBlock struct {
	phys              int64
	shared, unwritten bool
}

// maxExtentBytes bounds a plausible extent so a corrupt report cannot make
// the checker loop for ages.
const maxExtentBytes = 1 << 32

// checkDeep checks every file's Fiemap against the modelled sharing, then
// runs the target's consistency check.
func (r *runner) checkDeep(step int) *Failure {
	physOf := map[int]int64{}  // identity -> physical address
	idOf := map[int64]string{} // physical address -> "file block" that holds it, per identity
	identAt := map[int64]int{}
	for f := range NumFiles {
		if r.o.files[f] == nil {
			continue
		}
		name := FileName(f)
		exts, err := r.t.Fiemap(name)
		if err != nil {
			return r.fail(step, ClassFiemap, fmt.Sprintf("%s: Fiemap: %s", name, errName(err)), err)
		}
		got := map[int64]fiemapBlock{}
		for _, e := range exts {
			if e.Logical < 0 || e.Logical%B != 0 || e.Physical < 0 || e.Physical%B != 0 || e.Length <= 0 || e.Length > maxExtentBytes {
				return r.fail(step, ClassFiemap, fmt.Sprintf("%s: malformed extent %+v", name, e), nil)
			}
			for k := range ceilDiv(e.Length) {
				idx := e.Logical/B + k
				if _, dup := got[idx]; dup {
					return r.fail(step, ClassFiemap, fmt.Sprintf("%s: block %d reported twice (extent %+v)", name, idx, e), nil)
				}
				got[idx] = fiemapBlock{phys: e.Physical + k*B, shared: e.Shared, unwritten: e.Unwritten}
			}
		}
		bad := func(format string, args ...any) *Failure {
			return r.fail(step, ClassFiemap, fmt.Sprintf("%s: ", name)+fmt.Sprintf(format, args...)+
				fmt.Sprintf("\n\tmodel %s\n\tfiemap %s", r.o.Describe(f), showExtents(exts)), nil)
		}
		want := r.o.Blocks(f)
		for _, b := range want {
			g, ok := got[b.Index]
			switch {
			case !ok:
				return bad("block %d is a hole, want mapped (#%d)", b.Index, b.ID)
			case g.unwritten != b.Unwritten:
				return bad("block %d unwritten=%t, want %t", b.Index, g.unwritten, b.Unwritten)
			case g.shared != (b.Refs > 1):
				return bad("block %d shared=%t, want %t (%d references)", b.Index, g.shared, b.Refs > 1, b.Refs)
			}
			if p, seen := physOf[b.ID]; seen && p != g.phys {
				return bad("block %d at physical %d, but the same block (#%d) is at %d in %s", b.Index, g.phys, b.ID, p, idOf[p])
			}
			if id, seen := identAt[g.phys]; seen && id != b.ID {
				return bad("block %d at physical %d, which also holds different data (%s)", b.Index, g.phys, idOf[g.phys])
			}
			physOf[b.ID], identAt[g.phys] = g.phys, b.ID
			if _, ok := idOf[g.phys]; !ok {
				idOf[g.phys] = fmt.Sprintf("%s block %d", name, b.Index)
			}
			delete(got, b.Index)
		}
		for idx := range got {
			return bad("block %d mapped, want a hole", idx)
		}
	}
	if err := r.t.Check(); err != nil {
		return r.fail(step, ClassFsck, err.Error(), err)
	}
	return nil
}

func showExtents(exts []reflinkfs.Extent) string {
	var sb strings.Builder
	for i, e := range exts {
		if i == 20 {
			fmt.Fprintf(&sb, " ... (%d extents)", len(exts))
			break
		}
		fmt.Fprintf(&sb, " [%d+%d @%d", e.Logical/B, ceilDiv(e.Length), e.Physical/B)
		if e.Shared {
			sb.WriteString(" shared")
		}
		if e.Unwritten {
			sb.WriteString(" unwritten")
		}
		sb.WriteString("]")
	}
	if len(exts) == 0 {
		return "(no extents)"
	}
	return sb.String()
}
