package modeltest

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// ShrinkOptions bound the shrinker.
type ShrinkOptions struct {
	MaxRuns int           // default 2000 runs
	MaxTime time.Duration // default 2 minutes
	Run     RunOptions
}

// ShrinkStats say how shrinking went.
type ShrinkStats struct {
	Runs      int
	FromOps   int
	Elapsed   time.Duration
	OutOfTime bool // a budget ran out: the result is smaller but maybe not minimal
}

// Shrink minimises the failing sequence of first: it deletes chunks of ops
// (halves, quarters, ... single ops), then simplifies arguments (lengths and
// offsets towards 0 and whole blocks, data seeds towards 1, keep-size off),
// repeating until nothing more helps. Every candidate runs on a fresh target
// from newTarget and is kept only if it still fails with the same class. It
// returns the failure of the smallest sequence found.
func Shrink(newTarget Factory, first *Failure, opt ShrinkOptions) (*Failure, ShrinkStats) {
	if opt.MaxRuns <= 0 {
		opt.MaxRuns = 2000
	}
	if opt.MaxTime <= 0 {
		opt.MaxTime = 2 * time.Minute
	}
	s := &shrinker{newTarget: newTarget, class: first.Class, opt: opt, start: time.Now(), best: first}
	s.stats.FromOps = len(first.Ops)
	if first.Class != ClassSetup && !first.NotImplemented {
		// The ops after the failing step never ran; try without them.
		s.try(first.Ops[:min(first.Step+1, len(first.Ops))])
		for s.budgetLeft() {
			n := len(s.best.Ops)
			s.deleteChunks()
			s.simplifyArgs()
			if len(s.best.Ops) == n && !s.changed {
				break
			}
			s.changed = false
		}
	}
	s.stats.Elapsed = time.Since(s.start)
	s.best.Seed = first.Seed
	return s.best, s.stats
}

type shrinker struct {
	newTarget Factory
	class     string
	opt       ShrinkOptions
	start     time.Time
	best      *Failure
	changed   bool // an argument simplification was accepted this round
	stats     ShrinkStats
}

func (s *shrinker) budgetLeft() bool {
	if s.stats.Runs >= s.opt.MaxRuns || time.Since(s.start) >= s.opt.MaxTime {
		s.stats.OutOfTime = true
		return false
	}
	return true
}

// try runs cand and adopts it (cut after its failing step) if it fails the
// same way.
func (s *shrinker) try(cand []Op) bool {
	if !s.budgetLeft() {
		return false
	}
	s.stats.Runs++
	f := RunFresh(s.newTarget, cand, s.opt.Run)
	if f == nil || f.Class != s.class {
		return false
	}
	f.Ops = slices.Clip(f.Ops[:min(f.Step+1, len(f.Ops))])
	s.best = f
	return true
}

func (s *shrinker) deleteChunks() {
	for chunk := len(s.best.Ops) / 2; chunk >= 1; chunk /= 2 {
		for i := 0; i < len(s.best.Ops) && s.budgetLeft(); {
			ops := s.best.Ops
			cand := slices.Concat(ops[:i], ops[min(i+chunk, len(ops)):])
			if len(cand) == 0 || !s.try(cand) {
				i += chunk
			}
		}
	}
}

func (s *shrinker) simplifyArgs() {
	for i := 0; i < len(s.best.Ops) && s.budgetLeft(); i++ {
		for _, cand := range simpler(s.best.Ops[i]) {
			if i >= len(s.best.Ops) {
				break
			}
			ops := slices.Clone(s.best.Ops)
			ops[i] = cand
			if s.try(ops) {
				s.changed = true
				break // retry this op's simplifications next round
			}
		}
	}
}

// simpler returns simplifications of op, simplest first.
func simpler(op Op) []Op {
	var out []Op
	for _, field := range []*int64{&op.Off, &op.N, &op.DstOff} {
		for _, v := range simplerInts(*field) {
			old := *field
			*field = v
			out = append(out, op)
			*field = old
		}
	}
	if op.Seed > 1 {
		c := op
		c.Seed = 1
		out = append(out, c)
	}
	if op.Keep {
		c := op
		c.Keep = false
		out = append(out, c)
	}
	return out
}

// simplerInts returns values simpler than v: whole blocks beat odd bytes,
// then smaller magnitude wins. The order is well founded, so accepting
// simplifications always terminates.
func simplerInts(v int64) []int64 {
	if v == 0 {
		return nil
	}
	simplerThan := func(c, v int64) bool {
		ca, va := c%B == 0, v%B == 0
		if ca != va {
			return ca
		}
		return abs(c) < abs(v)
	}
	var out []int64
	add := func(c int64) {
		if !slices.Contains(out, c) && simplerThan(c, v) {
			out = append(out, c)
		}
	}
	add(0)
	add(B)
	add(v / B * B)
	add((v + B - 1) / B * B)
	add(v / 2 / B * B)
	add(v / 2)
	add(v/B*B + v%B/2) // halve the odd bytes: steps stay geometric
	return out
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// Report renders a (shrunk) failure for a test log: what failed, the minimal
// sequence as pasteable Go, and how to replay it.
func Report(f *Failure, st ShrinkStats) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "model failure: %v\n", f)
	if st.FromOps > 0 {
		fmt.Fprintf(&sb, "shrunk from %d to %d ops in %d runs (%v)", st.FromOps, len(f.Ops), st.Runs, st.Elapsed.Round(time.Millisecond))
		if st.OutOfTime {
			sb.WriteString(", budget exhausted: maybe not minimal")
		}
		sb.WriteString("\n")
	}
	if f.Seed != 0 {
		fmt.Fprintf(&sb, "seed %d (replay the unshrunk sequence: go test -run 'TestModelLibrary$' -model.seed=%d -v .)\n", f.Seed, f.Seed)
	}
	sb.WriteString("minimal sequence (paste into modelRegressions in model_test.go):\n")
	name := "describe-the-bug"
	if f.Seed != 0 {
		name = fmt.Sprintf("seed%d", f.Seed)
	}
	fmt.Fprintf(&sb, "{name: %q, ops: []mt.Op{\n%s}},\n", name, FormatOps(f.Ops))
	return sb.String()
}
