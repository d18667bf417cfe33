package modeltest

import (
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/reflinkfs/reflinkfs"
)

func TestGenerateDeterministic(t *testing.T) {
	a := Generate(42, GenOptions{Ops: 100, Detach: true})
	b := Generate(42, GenOptions{Ops: 100, Detach: true})
	c := Generate(43, GenOptions{Ops: 100, Detach: true})
	if len(a) != 100 || !slices.Equal(a, b) {
		t.Fatal("same seed, different sequences")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds, same sequence")
	}
}

// TestGeneratorCoverage checks the generator reaches the interesting
// outcomes of every op often enough to be worth running.
func TestGeneratorCoverage(t *testing.T) {
	type outcome struct {
		kind Kind
		what string
	}
	seen := map[outcome]int{}
	for seed := uint64(1); seed <= 200; seed++ {
		o := NewOracle()
		for _, op := range Generate(seed, GenOptions{Ops: 60, Detach: true}) {
			if atBothEOFs(o, op) {
				seen[outcome{op.Kind, "partial tail at both EOFs"}]++
			}
			r := op.applyOracle(o)
			what := "ok"
			var e syscall.Errno
			switch {
			case errors.As(r.Err, &e):
				what = e.Error()
			case errors.Is(r.Err, reflinkfs.ErrRangesDiffer):
				what = "differ"
			case r.Err != nil:
				t.Fatalf("seed %d %s: %v", seed, op, r.Err)
			case (op.Kind == KDedupe || op.Kind == KCopy) && r.N == 0:
				what = "zero"
			}
			seen[outcome{op.Kind, what}]++
		}
	}
	for _, want := range []struct {
		outcome
		min int
	}{
		{outcome{KWrite, "ok"}, 1000}, {outcome{KRead, "ok"}, 200}, {outcome{KTruncate, "ok"}, 300},
		{outcome{KPunch, "ok"}, 300}, {outcome{KZero, "ok"}, 250}, {outcome{KAlloc, "ok"}, 250},
		{outcome{KClone, "ok"}, 500}, {outcome{KClone, "invalid argument"}, 50},
		{outcome{KDedupe, "ok"}, 150}, {outcome{KDedupe, "differ"}, 50},
		{outcome{KCopy, "ok"}, 400}, {outcome{KUnshare, "ok"}, 150},
		{outcome{KRename, "ok"}, 100}, {outcome{KRemove, "ok"}, 50}, {outcome{KReopen, "ok"}, 50},
		{outcome{KDetach, "ok"}, 50}, {outcome{KCloseDetached, "ok"}, 30},
		{outcome{KPunch, "invalid argument"}, 5}, {outcome{KWrite, "no such file or directory"}, 0},
		{outcome{KCopy, "partial tail at both EOFs"}, 8}, {outcome{KClone, "partial tail at both EOFs"}, 10},
	} {
		if seen[want.outcome] < want.min {
			t.Errorf("%s %s: %d times in 200 sequences, want >= %d", want.kind, want.what, seen[want.outcome], want.min)
		}
	}
	if t.Failed() {
		t.Logf("all outcomes: %v", seen)
	}
}

// The oracle run against a correct copy of itself must never fail: this
// catches runner and generator bugs (bad indices, checks that misread).
func TestRunnerAgreesWithCorrectTarget(t *testing.T) {
	for seed := uint64(1); seed <= 100; seed++ {
		ops := Generate(seed, GenOptions{Ops: 60, Detach: true})
		if f := RunFresh(newMemTarget(false), ops, RunOptions{}); f != nil {
			t.Fatalf("seed %d: %v\n%s", seed, f, FormatOps(f.Ops))
		}
	}
}

// A target that forgets copy on write must be caught and shrunk to the
// handful of ops that show it.
func TestRunnerCatchesMissingCopyOnWrite(t *testing.T) {
	var first *Failure
	for seed := uint64(1); seed <= 100 && first == nil; seed++ {
		first = RunFresh(newMemTarget(true), Generate(seed, GenOptions{Ops: 60, Detach: true}), RunOptions{})
		if first != nil {
			first.Seed = seed
		}
	}
	if first == nil {
		t.Fatal("100 sequences did not catch a missing copy on write")
	}
	min, st := Shrink(newMemTarget(true), first, ShrinkOptions{})
	t.Logf("\n%s", Report(min, st))
	if len(min.Ops) > 4 || st.OutOfTime {
		t.Fatalf("shrunk to %d ops (out of budget %t), want at most 4: write, (create), share, write", len(min.Ops), st.OutOfTime)
	}
	if f := RunFresh(newMemTarget(true), min.Ops, RunOptions{}); f == nil || f.Class != first.Class {
		t.Fatalf("the minimal sequence does not fail the same way: %v", f)
	}
	if f := RunFresh(newMemTarget(false), min.Ops, RunOptions{}); f != nil {
		t.Fatalf("the minimal sequence fails a correct target: %v", f)
	}
	rep := Report(min, st)
	if !strings.Contains(rep, "mt.Write(") || !strings.Contains(rep, "[]mt.Op{") {
		t.Fatalf("report is not pasteable Go:\n%s", rep)
	}
}

func TestSetupFailureIsReportedOnce(t *testing.T) {
	factory := func() (Target, error) { return nil, &errWrap{syscall.ENOSYS} }
	f := RunFresh(factory, Generate(1, GenOptions{}), RunOptions{})
	if f == nil || f.Class != ClassSetup || !f.NotImplemented {
		t.Fatalf("got %v", f)
	}
	min, st := Shrink(factory, f, ShrinkOptions{})
	if st.Runs != 0 || min != f {
		t.Fatalf("shrinker ran %d times on a setup failure", st.Runs)
	}
}

type errWrap struct{ err error }

func (e *errWrap) Error() string { return "create: " + e.err.Error() }
func (e *errWrap) Unwrap() error { return e.err }

func TestNumFormat(t *testing.T) {
	for v, want := range map[int64]string{0: "0", 100: "100", B: "mt.B", 2 * B: "2*mt.B", B + 100: "mt.B+100", -1: "-1", Huge: "268435456*mt.B"} {
		if got := num(v); got != want {
			t.Errorf("num(%d) = %q, want %q", v, got, want)
		}
	}
}

// atBothEOFs reports whether op is a clone or same-alignment copy whose range
// ends at src EOF inside a partial block and exactly at dst EOF: the boundary
// of the rule deciding whether that last block is shared.
func atBothEOFs(o *Oracle, op Op) bool {
	if (op.Kind != KClone && op.Kind != KCopy) || !o.Exists(op.F) || !o.Exists(op.Dst) || op.Off < 0 || op.N < 0 {
		return false
	}
	ss, _ := o.Size(op.F)
	ds, _ := o.Size(op.Dst)
	n := min(op.N, ss-op.Off)
	if op.Kind == KClone && op.N == 0 {
		n = ss - op.Off
	}
	return n > 0 && op.Off%B == op.DstOff%B && op.Off+n == ss && ss%B != 0 &&
		(op.Off+n)/B*B > op.Off && op.DstOff+n == ds
}
