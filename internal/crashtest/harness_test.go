package crashtest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"
)

// An engine whose flushes do nothing (so committed metadata can reference
// blocks whose data a power cut loses) must fail the replay: this is the
// harness proving it can see the bug the flush prevents.
func TestHarnessDetectsMissingFlush(t *testing.T) {
	small := func(w *W) {
		a := w.Create("a")
		a.Write(0, 100*kib)
		a.Sync()
		a.Write(50*kib, 100*kib)
		b := w.Create("b")
		b.Write(0, 30*kib)
		b.Sync()
	}
	for _, wl := range []Workload{{Name: "small-writes", Run: small}, {Name: "overwrite-shared", Run: overwriteShared}} {
		t.Run(wl.Name, func(t *testing.T) {
			rec, err := Record(wl.Name, Config{Seed: 1, TempDir: t.TempDir(), dropFlushes: true}, wl.Run)
			if err != nil {
				t.Fatal(err)
			}
			failed, eio := 0, 0
			pts := rec.AllPoints(rand.New(rand.NewPCG(1, 2)), 1)
			for _, p := range pts {
				problems := rec.Check(p)
				if len(problems) > 0 {
					failed++
				}
				if strings.Contains(strings.Join(problems, "\n"), "EIO") {
					eio++
				}
			}
			t.Logf("%d of %d points fail, %d with EIO", failed, len(pts), eio)
			if failed == 0 || eio == 0 {
				t.Fatal("the replay did not notice data lost under committed metadata")
			}
		})
	}
}

// The harness must also not fail a correct run just because unflushed
// writes are lost: the same workload with flushes passes (TestCrashReplay).
// Here: a crash point is deterministic (the same point checked twice gives
// the same answer) and the end of a run is a passing point.
func TestCheckIsRepeatable(t *testing.T) {
	rec, err := Record("seq", Config{Seed: 3, TempDir: t.TempDir()}, sequentialWrites)
	if err != nil {
		t.Fatal(err)
	}
	pts := rec.Points(12, rand.New(rand.NewPCG(3, 3)))
	for _, p := range pts {
		a, b := rec.Check(p), rec.Check(p)
		if strings.Join(a, "|") != strings.Join(b, "|") {
			t.Errorf("point %v: %q then %q", p, a, b)
		}
		if len(a) > 0 {
			t.Errorf("point %v: %v", p, a)
		}
	}
}

// MetaFS's crash states behave like a disk under pebble: after a power cut
// only batches committed with Sync (or followed by a synced one) survive;
// after a process kill every committed batch does.
func TestMetaFSCrashStates(t *testing.T) {
	ops := 0
	m := NewMetaFS(func() int { return ops })
	// Make the store's directory durable, as kv.OpenPebble does.
	if err := m.MkdirAll("/img/meta", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"/", "/img"} {
		d, err := m.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	db, err := pebble.Open("/img/meta", &pebble.Options{FS: m})
	if err != nil {
		t.Fatal(err)
	}
	set := func(k string, sync bool) {
		opt := pebble.NoSync
		if sync {
			opt = pebble.Sync
		}
		if err := db.Set([]byte(k), []byte("v"+k), opt); err != nil {
			t.Fatal(err)
		}
		ops++ // each batch is a "device op" apart, so crash points fall between them
	}
	set("a", true)
	afterA := m.Len()
	set("b", false)
	afterB := m.Len()
	set("c", true)
	afterC := m.Len()
	set("d", false)
	end := m.Len()
	// db is abandoned, as a crash leaves it.

	keys := func(n int, powerCut bool) string {
		t.Helper()
		fs, err := m.State(n, powerCut, "/img/meta", "/replay/meta")
		if err != nil {
			t.Fatal(err)
		}
		db, err := pebble.Open("/replay/meta", &pebble.Options{FS: fs, Logger: quietPebble{}})
		if err != nil {
			t.Fatalf("open after %d events (power cut %v): %v", n, powerCut, err)
		}
		defer db.Close()
		var out []string
		it, _ := db.NewIter(nil)
		for ok := it.First(); ok; ok = it.Next() {
			out = append(out, string(it.Key()))
		}
		if err := it.Close(); err != nil {
			t.Fatalf("reading the store after %d events: %v", n, err)
		}
		return strings.Join(out, "")
	}
	// (Pebble writes a NoSync batch to the WAL file asynchronously, so
	// whether a kill right after it keeps it depends on timing.)
	for _, c := range []struct {
		n        int
		powerCut bool
		want     []string
	}{
		{afterA, true, []string{"a"}}, {afterA, false, []string{"a"}},
		{afterB, true, []string{"a"}}, {afterB, false, []string{"a", "ab"}},
		{afterC, true, []string{"abc"}}, {afterC, false, []string{"abc"}},
		{end, true, []string{"abc"}}, {end, false, []string{"abc", "abcd"}},
	} {
		if got := keys(c.n, c.powerCut); !slices.Contains(c.want, got) {
			t.Errorf("after %d events, power cut %v: keys %q, want one of %q", c.n, c.powerCut, got, c.want)
		}
	}
	// A state before the store existed has no store.
	fs, err := m.State(0, true, "/img/meta", "/replay/meta")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Stat("/replay/meta/CURRENT"); err == nil {
		t.Error("the state after 0 events has a store")
	}
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)           {}
func (quietPebble) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
