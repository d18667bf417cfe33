package crashtest

import (
	"flag"
	"math/rand/v2"
	"strings"
	"testing"
)

var (
	recoveryFirst  = flag.Int("crash.recovery", 8, "first crash points whose recovery is crashed again (TestCrashDuringRecovery), spread over its workloads")
	recoveryPoints = flag.Int("crash.recovery.points", 8, "crash points checked inside each recovery; 0 checks every instant")
)

// recoveryWorkloads are the workloads whose recoveries have the most to do:
// background freeing to resume, orphans to free, shared blocks.
var recoveryWorkloads = []string{"reap-cloned", "reap-unlinked-open", "unlink-open-clone-source", "mix"}

// TestCrashDuringRecovery crashes a recovery: for a sample of crash points
// of some workloads, it records the recovery from the point (open, the
// background freeing it resumes, close) and checks crash points inside it
// against the state the first crash must show.
func TestCrashDuringRecovery(t *testing.T) {
	perWorkload := max(*recoveryFirst/len(recoveryWorkloads), 1)
	var total int
	for _, name := range recoveryWorkloads {
		var wl Workload
		for _, w := range Workloads {
			if w.Name == name {
				wl = w
			}
		}
		if wl.Run == nil {
			t.Fatalf("no workload %s", name)
		}
		t.Run(name, func(t *testing.T) {
			defer wl.Tune()()
			rec, err := Record(wl.Name, Config{Seed: *crashSeed, TempDir: t.TempDir()}, wl.Run)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(*crashSeed, 11))
			// Candidates: right after each commit first (where recovery has
			// orphans and partly freed files to deal with), then anywhere.
			// A recovery with nothing to commit is passed over while there
			// are candidates left.
			candidates := rec.afterCommits()
			rng.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
			candidates = append(candidates, rec.Points(perWorkload*2, rng)...)
			failures, done := 0, 0
			for i, first := range candidates {
				if done == perWorkload {
					break
				}
				first.Reuse = false
				rr, err := rec.RecordRecovery(first)
				if err != nil {
					t.Errorf("recovering from %v: %v", first, err)
					done++
					continue
				}
				if rr.Commits() == 0 && len(candidates)-i > perWorkload-done {
					rr.removeDir()
					continue
				}
				done++
				pts := rr.Points(*recoveryPoints, rng)
				for _, p := range pts {
					if problems := rr.Check(p); len(problems) > 0 {
						failures++
						t.Errorf("crash at %v during recovery from %v:\n\t%s", p, first, strings.Join(problems, "\n\t"))
						if failures >= *crashMax {
							t.Fatalf("stopping after %d failing points", failures)
						}
					}
				}
				total += len(pts)
				t.Logf("recovery from %v: %d device ops, %d commits, %d crash points checked", first, rr.DeviceOps(), rr.Commits(), len(pts))
				if err := rr.removeDir(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	t.Logf("%d crash points during recovery checked", total)
}
