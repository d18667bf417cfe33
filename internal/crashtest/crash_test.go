package crashtest

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var (
	crashPoints = flag.Int("crash.points", 300, "crash points to check across all workloads; 0 checks every instant of every workload")
	crashSeed   = flag.Uint64("crash.seed", 1, "seed of the workloads and of the crash points chosen")
	crashMax    = flag.Int("crash.failures", 3, "failing points reported per workload before it stops")
	crashSeeds  = flag.Int("crash.seeds", 1, "how many seeds (crash.seed, crash.seed+1, ...) each workload runs with")
)

// TestCrashReplay records every workload and checks its crash points.
func TestCrashReplay(t *testing.T) {
	perWorkload := 0
	if *crashPoints > 0 {
		perWorkload = max(*crashPoints/len(Workloads), 4)
	}
	var total int
	start := time.Now()
	for i := range *crashSeeds * len(Workloads) {
		wl, seed := Workloads[i%len(Workloads)], *crashSeed+uint64(i/len(Workloads))
		name := wl.Name
		if *crashSeeds > 1 {
			name += fmt.Sprintf("/seed=%d", seed)
		}
		t.Run(name, func(t *testing.T) {
			defer wl.Tune()()
			rec, err := Record(wl.Name, Config{Seed: seed, TempDir: t.TempDir()}, wl.Run)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Commits() == 0 {
				t.Fatal("the workload made no commit")
			}
			rng := rand.New(rand.NewPCG(seed, 7))
			pts := rec.Points(perWorkload, rng)
			failures := 0
			for _, p := range pts {
				if problems := rec.Check(p); len(problems) > 0 {
					failures++
					t.Errorf("crash point %v:\n\t%s", p, strings.Join(problems, "\n\t"))
					if failures >= *crashMax {
						t.Fatalf("stopping after %d failing points", failures)
					}
				}
			}
			total += len(pts)
			t.Logf("%d device ops, %d commits (%d with a deleted file partly freed), %d crash points checked",
				rec.DeviceOps(), rec.Commits(), rec.ReapingSyncs(), len(pts))
			if wl.Reap != [2]int{} && rec.ReapingSyncs() == 0 {
				t.Log("no commit caught the background freeing under way this run")
			}
		})
	}
	t.Logf("%d crash points in %v", total, time.Since(start).Round(time.Millisecond))
}
