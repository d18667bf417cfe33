package reflinkfs_test

// Model-based random testing of the library: random operation sequences run
// against reflinkfs and an in-memory oracle (internal/modeltest), every
// result and the whole visible state compared after each step, failures
// shrunk to a minimal sequence.
//
//	go test -run 'TestModel' .                                   # default: 300 sequences or 40 s
//	go test -run 'TestModelLibrary$' -model.duration=10m -model.seqs=1000000 .
//	go test -run 'TestModelLibrary$' -model.seed=12345 -v .      # replay one seed, step by step
//	go test -run 'TestModelLibrary$' -model.without=dedupe .      # get past a known dedupe bug

import (
	"flag"
	"testing"
	"time"

	mt "github.com/reflinkfs/reflinkfs/internal/modeltest"
)

var (
	modelSeqs     = flag.Int("model.seqs", 300, "model tester: number of sequences to run")
	modelOps      = flag.Int("model.ops", 60, "model tester: operations per sequence")
	modelDuration = flag.Duration("model.duration", 40*time.Second, "model tester: start no new sequence after this long")
	modelSeed     = flag.Uint64("model.seed", 0, "model tester: run only the sequence with this seed (as printed by a failure)")
	modelWithout  = flag.String("model.without", "", "model tester: op kinds never to generate, e.g. dedupe,copy (to get past a known bug)")
)

// modelRegressions are minimal failing sequences the model tester found,
// pasted from its failure report. Each must pass for ever after.
var modelRegressions = []struct {
	name string
	ops  []mt.Op
}{
	{name: "dedupe-same-file-unwritten-block-count", ops: []mt.Op{
		mt.Write(2, 0, 0, 0),
		mt.Zero(2, 31*mt.B, mt.B),
		mt.Dedupe(2, 2, 26*mt.B, 8*mt.B, 0),
	}},
	{name: "punch-byte-of-shared-unwritten-block", ops: []mt.Op{
		mt.Write(0, 0, 0, 1),
		mt.Alloc(0, 0, 3*mt.B, false),
		mt.Clone(0, 0, 0, 0, 3*mt.B),
		mt.Punch(0, mt.B, 1),
	}},
}

func modelFactory(t *testing.T) mt.Factory {
	return mt.LibFactory(t.TempDir(), mt.LibOptions{})
}

// modelFail reports f, shrinking it first unless the engine is simply not
// there yet.
func modelFail(t *testing.T, factory mt.Factory, f *mt.Failure) {
	t.Helper()
	switch {
	case f.NotImplemented:
		t.Fatalf("the engine answered ENOSYS (not implemented yet); first failure, seed %d:\n%v", f.Seed, f)
	case f.Class == mt.ClassSetup:
		t.Fatalf("cannot make a reflinkfs image to test: %v", f)
	}
	t.Logf("seed %d failed (%v); shrinking...", f.Seed, f)
	min, st := mt.Shrink(factory, f, mt.ShrinkOptions{})
	t.Fatalf("\n%s", mt.Report(min, st))
}

func TestModelLibrary(t *testing.T) {
	factory := modelFactory(t)
	without, err := mt.ParseKinds(*modelWithout)
	if err != nil {
		t.Fatal(err)
	}
	gen := mt.GenOptions{Ops: *modelOps, Detach: true, Without: without}

	if *modelSeed != 0 {
		opts := mt.RunOptions{}
		if testing.Verbose() {
			opts.Log = t.Logf
		}
		if f := mt.RunFresh(factory, mt.Generate(*modelSeed, gen), opts); f != nil {
			f.Seed = *modelSeed
			modelFail(t, factory, f)
		}
		return
	}

	seqs, limit := *modelSeqs, *modelDuration
	if testing.Short() {
		seqs, limit = min(seqs, 30), min(limit, 5*time.Second)
	}
	base := uint64(time.Now().UnixNano())
	start := time.Now()
	ran := 0
	for ; ran < seqs && time.Since(start) < limit; ran++ {
		seed := base + uint64(ran)
		if seed == 0 {
			continue // 0 means "no seed" to -model.seed
		}
		began := time.Now()
		if f := mt.RunFresh(factory, mt.Generate(seed, gen), mt.RunOptions{}); f != nil {
			f.Seed = seed
			modelFail(t, factory, f)
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Logf("slow: seed %d took %v (replay with -model.seed=%d -v for per-step times)", seed, d.Round(time.Millisecond), seed)
		}
	}
	t.Logf("%d sequences of %d ops passed in %v (seeds %d..%d)", ran, gen.Ops, time.Since(start).Round(time.Millisecond), base, base+uint64(ran)-1)
}

func TestModelRegressions(t *testing.T) {
	factory := modelFactory(t)
	for _, r := range modelRegressions {
		t.Run(r.name, func(t *testing.T) {
			if f := mt.RunFresh(factory, r.ops, mt.RunOptions{}); f != nil {
				t.Fatalf("\n%s", mt.Report(f, mt.ShrinkStats{}))
			}
		})
	}
}
