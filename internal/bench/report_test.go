package bench

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syntheticRecorder holds figures for every workload, as a run would.
func syntheticRecorder() *Recorder {
	r := newRecorder()
	gib := float64(1 << 30)
	for _, n := range []int{1, 2, 4} {
		cs := "N=" + string(rune('0'+n))
		for i := 0; i < 3; i++ {
			r.Add(WorkloadMemory, mHeld, cs, float64(n), fsXFS, unitBytes, float64(n+1)*gib)
			r.Add(WorkloadMemory, mHeld, cs, float64(n), fsReflinkfs, unitBytes, gib)
			r.Add(WorkloadMemory, mRSSGrowth, cs, float64(n), fsReflinkfs, unitBytes, 1.1*gib)
			r.Add(WorkloadMemory, mFileSize, cs, float64(n), fsXFS, unitBytes, gib)
			r.Add(WorkloadMemory, mFileSize, cs, float64(n), fsReflinkfs, unitBytes, gib)
			r.Add(WorkloadMemory, mReadAll, cs, float64(n), fsXFS, unitSeconds, 1)
		}
	}
	for _, size := range []int64{64 << 20, 1 << 30} {
		cs := sizeLabel(size)
		r.Add(WorkloadClone, mExtents, cs, float64(size), fsXFS, unitCount, 1)
		r.Add(WorkloadClone, mExtents, cs, float64(size), fsReflinkfs, unitCount, 1)
		r.AddDuration(WorkloadClone, mCloneCall, cs, float64(size), fsXFS, 80*time.Microsecond)
		r.AddDuration(WorkloadClone, mCloneCall, cs, float64(size), fsReflinkfs, 150*time.Microsecond)
		r.AddDuration(WorkloadLibrary, mCloneCall, cs, float64(size), fsLibrary, 40*time.Microsecond)
	}
	for _, layout := range []string{layoutRandom, layoutInterleaved} {
		for _, ext := range []float64{16000, 262000} {
			cs := fragCase(int64(ext)*4096, layout)
			r.Add(WorkloadExtents, mExtents, cs, ext, fsXFS, unitCount, ext)
			r.Add(WorkloadExtents, mExtents, cs, ext, fsReflinkfs, unitCount, ext)
			r.Add(WorkloadExtents, mCloneCall, cs, ext, fsXFS, unitSeconds, ext*20e-6)
			r.Add(WorkloadExtents, mCloneCall, cs, ext, fsReflinkfs, unitSeconds, ext*16e-6)
			r.Add(WorkloadExtents, mDeleteSync, cs, ext, fsXFS, unitSeconds, ext*6e-6)
			r.Add(WorkloadExtents, mDeleteSync, cs, ext, fsReflinkfs, unitSeconds, ext*8e-6)
			r.Add(WorkloadExtents, mUnlink, cs, ext, fsXFS, unitSeconds, 20e-6)
			// The random layout's unlink is slow, the interleaved one's fast.
			unlink := map[string]float64{layoutRandom: ext * 8e-6, layoutInterleaved: 80e-6}[layout]
			r.Add(WorkloadExtents, mUnlink, cs, ext, fsReflinkfs, unitSeconds, unlink)
		}
	}
	for _, bs := range []int{1 << 20, 128 << 10} {
		cs := readCase(bs)
		r.Add(WorkloadRead, mCachedRead, cs, float64(bs), fsXFS, unitBPS, 6e9)
		r.Add(WorkloadRead, mCachedRead, cs, float64(bs), fsReflinkfs, unitBPS, 2e9)
		r.Add(WorkloadRead, mUncachedRead, cs, float64(bs), fsXFS, unitBPS, 1.4e9)
		r.Add(WorkloadRead, mUncachedRead, cs, float64(bs), fsReflinkfs, unitBPS, 0.3e9)
		r.Add(WorkloadRead, mDaemonCPU, cs, float64(bs), fsReflinkfs, unitSeconds, 0.4)
		r.Add(WorkloadRead, mCachedRead, cs, float64(bs), fsFUSECeiling, unitBPS, 4e9)
	}
	for _, cs := range []string{caseShared, caseUnshare} {
		r.Add(WorkloadCoW, mCoWTotal, cs, 0, fsXFS, unitSeconds, 1)
		r.Add(WorkloadCoW, mCoWTotal, cs, 0, fsReflinkfs, unitSeconds, 0.5)
	}
	r.Add(WorkloadCoW, mCoWRatio, caseRatio, 0, fsXFS, unitRatio, 3.9)
	r.Add(WorkloadCoW, mCoWRatio, caseRatio, 0, fsReflinkfs, unitRatio, 0.5)
	r.Add(WorkloadTree, mTreeFiles, caseTree, 0, fsXFS, unitCount, 2000)
	r.Add(WorkloadTree, mFileSize, caseTree, 0, fsXFS, unitBytes, 30<<20)
	r.Add(WorkloadTree, mHeld, caseTree, 0, fsXFS, unitBytes, 9*30<<20)
	r.Add(WorkloadTree, mHeld, caseTree, 0, fsReflinkfs, unitBytes, 34<<20)
	r.Add(WorkloadMetadata, mCreate, caseMeta, 0, fsXFS, unitOPS, 66000)
	r.Add(WorkloadMetadata, mCreate, caseMeta, 0, fsReflinkfs, unitOPS, 9000)
	return r
}

func TestBuildTables(t *testing.T) {
	cfg := DefaultConfig(false)
	tables := buildTables(syntheticRecorder(), &cfg)
	byWorkload := map[string]Table{}
	for _, tbl := range tables {
		byWorkload[tbl.Workload] = tbl
	}
	for _, w := range []string{WorkloadClone, WorkloadExtents, WorkloadMemory, WorkloadRead, WorkloadCoW, WorkloadTree, WorkloadMetadata, WorkloadLibrary} {
		if _, ok := byWorkload[w]; !ok {
			t.Errorf("no table for %s", w)
		}
	}
	mem := byWorkload[WorkloadMemory]
	if len(mem.Rows) != 3 {
		t.Fatalf("memory rows: %v", mem.Rows)
	}
	// N=4: five files read; XFS 5 GiB, reflinkfs 1 GiB.
	row := mem.Rows[2]
	if row[0] != "4 (5)" || row[1] != "5.00 GiB" || row[2] != "1.00 GiB" || row[3] != "0.20×" || row[4] != "5.00×" || row[5] != "1.00×" {
		t.Fatalf("memory row: %q", row)
	}
	clone := byWorkload[WorkloadClone]
	var found bool
	for _, r := range clone.Rows {
		if r[0] == "1 GiB" && r[1] == "clone call" {
			found = true
			if r[2] != "150.0 µs" || r[3] != "80.0 µs" || r[4] != "1.87×" || r[5] != "40.0 µs" {
				t.Fatalf("clone row: %q", r)
			}
		}
	}
	if !found {
		t.Fatalf("no 1 GiB clone row: %v", clone.Rows)
	}
	cow := byWorkload[WorkloadCoW]
	last := cow.Rows[len(cow.Rows)-1]
	if last[2] != "0.50×" || last[3] != "3.90×" || last[4] != "" {
		t.Fatalf("cow ratio row: %q", last)
	}
}

func TestCheckTargets(t *testing.T) {
	cfg := DefaultConfig(false)
	checks := checkTargets(syntheticRecorder(), &cfg)
	verdicts := map[string]string{}
	for _, c := range checks {
		verdicts[strings.SplitN(c.Target, " ", 3)[0]+" "+strings.SplitN(c.Target, " ", 3)[1]] += c.Verdict + ";"
	}
	if v := verdicts["memory of"]; v != "met;" {
		t.Errorf("memory: %s", v)
	}
	if v := verdicts["library clone"]; v != "met;" {
		t.Errorf("library clone: %s", v)
	}
	// 1 GiB contiguous: missed; both fragmented layouts: 16 µs vs 20 µs per extent: met.
	if v := verdicts["clone of"]; v != "missed;met;met;" {
		t.Errorf("clone: %s", v)
	}
	// The verdict is on unlink: 2.1 s in the random layout (missed), 80 µs
	// in the interleaved one (met).
	if v := verdicts["deleting that"]; v != "missed;met;" {
		t.Errorf("delete: %s", v)
	}
	if v := verdicts["copy-on-write overwrites:"]; v != "met;" {
		t.Errorf("cow: %s", v)
	}
	// 2 GB/s: below 4 GB/s and 50% of the 4 GB/s ceiling.
	if v := verdicts["cached sequential"]; v != "missed;" {
		t.Errorf("cached read: %s", v)
	}
	empty := checkTargets(newRecorder(), &cfg)
	for _, c := range empty {
		if c.Verdict != "not measured" {
			t.Errorf("nothing measured, yet %q is %s", c.Target, c.Verdict)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	cfg := DefaultConfig(true)
	rec := syntheticRecorder()
	res := &Results{Command: []string{"reflinkfs", "bench", "--quick"}, Mode: "quick", Runs: 3,
		Started: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Machine: Machine{Kernel: "6.18", CPUModel: "cpu", CPUs: 2, MemBytes: 24 << 30},
		Tables: buildTables(rec, &cfg), Targets: checkTargets(rec, &cfg), Notes: []string{"a note"},
		Errors: map[string]string{"tree": "boom"}, Profiles: map[string]string{"perf-cached-read": "36% memmove"}}
	res.Finished = res.Started.Add(90 * time.Second)
	var b bytes.Buffer
	writeMarkdown(&b, res)
	out := b.String()
	for _, want := range []string{"- date: 2026-01-02 03:04 UTC (took 1m30s)", "`reflinkfs bench --quick`", "Linux 6.18, cpu × 2, 24.00 GiB RAM",
		"### 2. Memory held", "### Targets (DESIGN.md)", "36% memmove", "- a note", "- tree: boom"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestDrawPlots(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig(true)
	paths, err := drawPlots(syntheticRecorder(), &cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"memory-vs-clones.png", "clone-vs-size.png", "clone-vs-extents.png", "delete-vs-extents.png", "read-throughput.png", "cow-overwrites.png"}
	if len(paths) != len(want) {
		t.Fatalf("plots: %v", paths)
	}
	for i, p := range paths {
		if filepath.Base(p) != want[i] {
			t.Errorf("plot %d: %s, want %s", i, p, want[i])
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = png.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: not a PNG: %v", p, err)
		}
	}
	none, err := drawPlots(newRecorder(), &cfg, t.TempDir())
	if err != nil || len(none) != 0 {
		t.Fatalf("no figures: %v %v", none, err)
	}
}

func TestTicks125(t *testing.T) {
	var labels []string
	for _, tk := range (ticks125{}).Ticks(0.03, 0.6) {
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if strings.Join(labels, " ") != "0.05 0.1 0.2 0.5" {
		t.Fatalf("labels %v", labels)
	}
	n := 0
	for _, tk := range (ticks125{}).Ticks(0.14, 0.16) {
		if tk.Label != "" {
			n++
		}
	}
	if n < 2 {
		t.Fatal("a narrow range must still get two labels")
	}
}
