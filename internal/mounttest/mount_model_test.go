package mounttest

// Model-based random testing through a FUSE mount: random operation
// sequences run as system calls on a mounted reflinkfs and against the
// in-memory oracle of internal/modeltest.
//
//	go test -run 'TestModelMount$' ./internal/mounttest/                        # default: 45 s
//	go test -run 'TestModelMount$' -model.duration=10m -model.seqs=100000 ./internal/mounttest/
//	go test -run 'TestModelMount$' -model.seed=12345 -v ./internal/mounttest/   # replay one seed
//	go test -run 'TestModelMount$' -model.without=dedupe ./internal/mounttest/   # past a known bug

import (
	"flag"
	"fmt"
	"github.com/reflinkfs/reflinkfs/internal/testenv"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs/internal/fusefs"
	mt "github.com/reflinkfs/reflinkfs/internal/modeltest"
)

var (
	modelSeqs     = flag.Int("model.seqs", 100000, "mount model tester: number of sequences to run")
	modelOps      = flag.Int("model.ops", 60, "mount model tester: operations per sequence")
	modelDuration = flag.Duration("model.duration", 45*time.Second, "mount model tester: start no new sequence after this long")
	modelSeed     = flag.Uint64("model.seed", 0, "mount model tester: run only the sequence with this seed (as printed by a failure)")
	modelWithout  = flag.String("model.without", "", "mount model tester: op kinds never to generate, e.g. dedupe,copy (to get past a known bug)")
)

// mmapHelper is the helper process shared by every test (see MmapHelper).
var (
	mmapOnce   sync.Once
	mmapShared *MmapHelper
	mmapErr    error
)

func TestMain(m *testing.M) {
	ServeMmapHelperIfAsked()
	code := m.Run()
	if mmapShared != nil {
		if err := mmapShared.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "mmap helper:", err)
			code = max(code, 1)
		}
	}
	os.Exit(code)
}

func sharedMmapHelper(t testing.TB) *MmapHelper {
	t.Helper()
	mmapOnce.Do(func() { mmapShared, mmapErr = StartMmapHelper() })
	if mmapErr != nil {
		t.Fatal(mmapErr)
	}
	return mmapShared
}

// testLogger passes the adapter's warnings to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// countingFactory makes mount targets and adds up their IOCounts when they
// are closed.
type countingFactory struct {
	base   mt.Factory
	totals IOCounts
}

type countedTarget struct {
	*MountTarget
	parent *countingFactory
}

func (c countedTarget) Close() error {
	n := c.IOCounts()
	p := &c.parent.totals
	p.PlainWrites += n.PlainWrites
	p.DirectWrites += n.DirectWrites
	p.MmapWrites += n.MmapWrites
	p.PlainReads += n.PlainReads
	p.DirectReads += n.DirectReads
	p.MmapReads += n.MmapReads
	p.MmapFallbacks += n.MmapFallbacks
	p.FreshReads += n.FreshReads
	p.PassthroughReads += n.PassthroughReads
	return c.MountTarget.Close()
}

func (cf *countingFactory) make() (mt.Target, error) {
	t, err := cf.base()
	if err != nil {
		return nil, err
	}
	return countedTarget{MountTarget: t.(*MountTarget), parent: cf}, nil
}

func mountFactory(t *testing.T) *countingFactory {
	// share=all: every read through a fresh read-only descriptor is passed
	// through to a backing snapshot, and writers meet its release.
	return &countingFactory{base: Factory(t.TempDir(), Options{Logger: testLogger(t), Mmap: sharedMmapHelper(t), Share: fusefs.ShareAll})}
}

func libFactory(t *testing.T) mt.Factory {
	return mt.LibFactory(t.TempDir(), mt.LibOptions{})
}

// triage reports a failing sequence: it runs the same ops through the
// library first. If the library fails too the bug is in the engine and is
// shrunk there (fast); otherwise it is the mount's (adapter or kernel) and
// is shrunk through fresh mounts.
func triage(t *testing.T, mount mt.Factory, f *mt.Failure) {
	t.Helper()
	switch {
	case f.NotImplemented:
		t.Fatalf("the engine answered ENOSYS (not implemented yet); seed %d:\n%v", f.Seed, f)
	case f.Class == mt.ClassSetup:
		t.Fatalf("cannot mount a reflinkfs image to test: %v", f)
	}
	replay := fmt.Sprintf("replay: go test -run 'TestModelMount$' -model.seed=%d -v ./internal/mounttest/", f.Seed)
	lib := libFactory(t)
	t.Logf("seed %d failed through the mount (%v); running it through the library...", f.Seed, f)
	if lf := mt.RunFresh(lib, f.Ops, mt.RunOptions{}); lf != nil {
		lf.Seed = f.Seed
		min, st := mt.Shrink(lib, lf, mt.ShrinkOptions{})
		t.Fatalf("ENGINE BUG: the library fails the same sequence.\nmount failure: %v\n%s\n%s", f, replay, mt.Report(min, st))
	}
	t.Logf("the library passes it: a mount-only failure; shrinking through fresh mounts...")
	min, st := mt.Shrink(mount, f, mt.ShrinkOptions{})
	libNote := "the library passes the shrunk sequence too"
	if lf := mt.RunFresh(lib, min.Ops, mt.RunOptions{}); lf != nil {
		libNote = fmt.Sprintf("but the library FAILS the shrunk sequence: %v", lf)
	}
	if len(Mountable(min.Ops)) < len(min.Ops) {
		libNote += "; the shrunk sequence holds a copy that is not Expressible: trust the unshrunk one"
	}
	t.Fatalf("MOUNT-ONLY FAILURE (FUSE adapter or kernel semantics; %s).\n%s\n%s", libNote, replay, mt.Report(min, st))
}

func TestModelMount(t *testing.T) {
	testenv.RequireFUSE(t)
	cf := mountFactory(t)
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
		if f := mt.RunFresh(cf.make, Mountable(mt.Generate(*modelSeed, gen)), opts); f != nil {
			f.Seed = *modelSeed
			triage(t, cf.make, f)
		}
		return
	}

	seqs, limit := *modelSeqs, *modelDuration
	if testing.Short() {
		seqs, limit = min(seqs, 20), min(limit, 5*time.Second)
	}
	base := uint64(time.Now().UnixNano())
	start := time.Now()
	ran, cut := 0, 0
	for ; ran < seqs && time.Since(start) < limit; ran++ {
		seed := base + uint64(ran)
		if seed == 0 {
			continue // 0 means "no seed" to -model.seed
		}
		began := time.Now()
		ops := mt.Generate(seed, gen)
		if m := Mountable(ops); len(m) < len(ops) {
			ops, cut = m, cut+1
		}
		if f := mt.RunFresh(cf.make, ops, mt.RunOptions{}); f != nil {
			f.Seed = seed
			triage(t, cf.make, f)
		}
		if d := time.Since(began); d > 5*time.Second {
			t.Logf("slow: seed %d took %v (replay with -model.seed=%d -v for per-step times)", seed, d.Round(time.Millisecond), seed)
		}
	}
	t.Logf("%d sequences of %d ops passed through the mount in %v (seeds %d..%d; %d cut short before a copy that is not Expressible); I/O paths %+v",
		ran, gen.Ops, time.Since(start).Round(time.Millisecond), base, base+uint64(ran)-1, cut, cf.totals)
	if cf.totals.FreshReads > 20 && cf.totals.PassthroughReads == 0 {
		t.Errorf("none of %d reads through a fresh read-only descriptor was passed through", cf.totals.FreshReads)
	}
}
