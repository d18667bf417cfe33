package bench

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// ptRecorder holds mapped, firstopen and clone-read figures as a run would.
func ptRecorder(reflinkfsUnits float64) *Recorder {
	r := newRecorder()
	lib := float64(64 << 20)
	for _, n := range []int{1, 4, 16} {
		cs := "N=" + map[int]string{1: "1", 4: "4", 16: "16"}[n]
		x := float64(n)
		for _, k := range mappedKeys {
			r.Add(WorkloadMapped, mMapUnit, cs, x, k, unitBytes, lib)
		}
		r.Add(WorkloadMapped, mMapExact, cs, x, fsReflinkfs, unitBytes, reflinkfsUnits*lib)
		r.Add(WorkloadMapped, mMapCached, cs, x, fsReflinkfs, unitBytes, 1.2*lib)
		r.Add(WorkloadMapped, mMapExact, cs, x, fsReflinkfsOff, unitBytes, x*lib)
		r.Add(WorkloadMapped, mMapExact, cs, x, fsXFS, unitBytes, x*lib)
		r.Add(WorkloadMapped, mMapExact, cs, x, fsOverlay, unitBytes, lib)
		r.Add(WorkloadMapped, mMapBackings, cs, x, fsReflinkfs, unitCount, 2)
	}
	for _, bs := range []int{1 << 20, 128 << 10} {
		cs := sharedReadCase(bs)
		r.Add(WorkloadRead, mCachedRead, cs, float64(bs), fsXFS, unitBPS, 10e9)
		r.Add(WorkloadRead, mCachedRead, cs, float64(bs), fsReflinkfs, unitBPS, 9.5e9)
		r.Add(WorkloadRead, mCachedRead, cs, float64(bs), fsReflinkfsOff, unitBPS, 2e9)
	}
	r.Add(WorkloadOpen, mFirstOpen, "64 MiB", 64<<20, fsReflinkfs, unitSeconds, 500e-6)
	r.Add(WorkloadOpen, mLaterOpen, "64 MiB", 64<<20, fsReflinkfs, unitSeconds, 20e-6)
	return r
}

func TestPassthroughTargets(t *testing.T) {
	for _, tc := range []struct {
		units float64
		want  string
	}{{1.03, "met"}, {1.2, "missed"}} {
		got := passthroughTargets(ptRecorder(tc.units))
		if len(got) != 2 {
			t.Fatalf("%d targets, want 2", len(got))
		}
		if got[0].Verdict != tc.want {
			t.Errorf("mapped %.2f×: verdict %q, want %q (%s)", tc.units, got[0].Verdict, tc.want, got[0].Measured)
		}
		for _, want := range []string{"N=1: reflinkfs", "N=16", "XFS 16.0×", "overlayfs 1.00×", "meminfo 1.20×"} {
			if !strings.Contains(got[0].Measured, want) {
				t.Errorf("mapped measured %q lacks %q", got[0].Measured, want)
			}
		}
		// 9.5 / 10 GB/s = 0.95 >= 0.9
		if got[1].Verdict != "met" || !strings.Contains(got[1].Measured, "0.95×") || !strings.Contains(got[1].Measured, "share=off 0.20×") {
			t.Errorf("shared read target %+v", got[1])
		}
	}
	if got := passthroughTargets(newRecorder()); got[0].Verdict != "not measured" || got[1].Verdict != "not measured" {
		t.Errorf("empty run: %+v", got)
	}
}

func TestSharedReadTargetMissed(t *testing.T) {
	r := newRecorder()
	cs := sharedReadCase(1 << 20)
	r.Add(WorkloadRead, mCachedRead, cs, 1<<20, fsXFS, unitBPS, 10e9)
	r.Add(WorkloadRead, mCachedRead, cs, 1<<20, fsReflinkfs, unitBPS, 8e9)
	if got := passthroughTargets(r)[1]; got.Verdict != "missed" {
		t.Errorf("0.8× XFS: %+v", got)
	}
}

func TestPassthroughTables(t *testing.T) {
	rec := ptRecorder(1.03)
	cfg := DefaultConfig(false)
	tables := passthroughTables(rec, &cfg)
	titles := ""
	for _, tb := range tables {
		titles += tb.Title + "\n"
		for _, row := range tb.Rows {
			if len(row) != len(tb.Columns) {
				t.Errorf("%s: row %q has %d cells, want %d", tb.Title, row, len(row), len(tb.Columns))
			}
		}
	}
	for _, want := range []string{"3b.", "7. Mapped sharing", "3c."} {
		if !strings.Contains(titles, want) {
			t.Errorf("no table %q in\n%s", want, titles)
		}
	}
	md := tables[1].Markdown()
	for _, want := range []string{"| 16 | exact: cachestat", "1.03× (65.9 MiB)", "16.0× (1.00 GiB)", "| — |"} {
		if !strings.Contains(md, want) {
			t.Errorf("mapped table lacks %q:\n%s", want, md)
		}
	}
	if !strings.Contains(tables[2].Markdown(), "| 64 MiB | first − later | 480.0 µs |") {
		t.Errorf("first-open table:\n%s", tables[2].Markdown())
	}
	// The clone cases stay out of table 3 (the unshared file).
	for _, tb := range buildTables(rec, &cfg) {
		if strings.HasPrefix(tb.Title, "3. ") {
			t.Errorf("table 3 built from clone rows only: %q", tb.Rows)
		}
	}
}

func TestFmtUnits(t *testing.T) {
	if got := fmtUnits(64<<20, 64<<20); got != "1.00× (64.0 MiB)" {
		t.Errorf("fmtUnits = %q", got)
	}
	if got := fmtUnits(1, 0); got != "—" {
		t.Errorf("fmtUnits without a unit = %q", got)
	}
}

func TestRotate(t *testing.T) {
	vs := []variant{{key: "a"}, {key: "b"}, {key: "c"}}
	keys := func(vs []variant) string {
		var s []string
		for _, v := range vs {
			s = append(s, v.key)
		}
		return strings.Join(s, "")
	}
	if got := keys(rotate(vs, 0)); got != "abc" {
		t.Errorf("even: %s", got)
	}
	if got := keys(rotate(vs, 1)); got != "cba" {
		t.Errorf("odd: %s", got)
	}
	if keys(vs) != "abc" {
		t.Error("rotate changed its argument")
	}
}

func TestHelperLines(t *testing.T) {
	lib, exe, err := parseHelperCache("cache 67108864 1048576\n")
	if err != nil || lib != 64<<20 || exe != 1<<20 {
		t.Errorf("parseHelperCache = %d, %d, %v", lib, exe, err)
	}
	for _, bad := range []string{"", "ready 3\n", "cache -1 0\n", "cache 1\n"} {
		if _, _, err := parseHelperCache(bad); err == nil {
			t.Errorf("parseHelperCache(%q) accepted", bad)
		}
	}
	if err := checkReady("ready 17\n", nil); err != nil {
		t.Error(err)
	}
	if err := checkReady("ready 17", io.EOF); err != nil {
		t.Errorf("a last line without newline: %v", err)
	}
	if err := checkReady("", io.EOF); err == nil || !errors.Is(err, io.EOF) {
		t.Errorf("no output: %v", err)
	}
	if err := checkReady("mmap: no such device\n", nil); err == nil {
		t.Error("an error line was taken for ready")
	}
}
