package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot/plotter"
)

// Tables, targets and plots of the passthrough measurements: the mapped
// and firstopen workloads and the read workload's clone rows.

// fsName names a file system key in tables.
var fsNames = map[string]string{
	fsReflinkfs:    "reflinkfs",
	fsReflinkfsOff: "reflinkfs share=off",
	fsXFS:          "XFS",
	fsOverlay:      "overlayfs",
}

// mappedSharingTarget is DESIGN.md's "N processes mapping N clones hold
// <= 1.1x one copy in the page cache".
const mappedSharingTarget = 1.1

// sharedReadTarget is DESIGN.md's "cached reads of shared files >= 0.9x
// XFS's page cache".
const sharedReadTarget = 0.9

// fmtUnits renders v as a multiple of unit, with v itself: "1.02× (65.3 MiB)".
func fmtUnits(v, unit float64) string {
	if math.IsNaN(v) || unit <= 0 {
		return "—"
	}
	return fmtRatio(v/unit) + " (" + fmtBytes(v) + ")"
}

// multiRow renders [labels..., one cell per fs key] for one metric of one
// case, each cell by cell (given the metric, nil if not measured).
func multiRow(rec *Recorder, w, cs, name string, keys []string, cell func(*Metric) string, labels ...string) []string {
	row := slices.Clone(labels)
	for _, k := range keys {
		m := rec.Get(w, name, cs, k)
		if m == nil {
			row = append(row, "—")
			continue
		}
		row = append(row, cell(m))
	}
	return row
}

// isCloneCase tells the read workload's clone cases from the others.
func isCloneCase(cs string) bool { return strings.HasSuffix(cs, ", clone") }

// mappedKeys are the mapped workload's file systems, in table order.
var mappedKeys = []string{fsReflinkfs, fsReflinkfsOff, fsXFS, fsOverlay}

// passthroughTables renders the tables of the passthrough measurements.
func passthroughTables(rec *Recorder, cfg *Config) []Table {
	var out []Table
	runs := fmt.Sprintf("median of %d runs", cfg.Runs)
	if hasCloneReads(rec) {
		keys := []string{fsReflinkfs, fsReflinkfsOff, fsXFS}
		t := Table{Workload: WorkloadRead, Title: fmt.Sprintf("3b. Sequential read of a %s clone: passthrough vs share=off vs XFS (%s)", sizeLabel(cfg.ReadFileSize), runs),
			Columns: []string{"reads", "measure", "reflinkfs (passthrough)", "reflinkfs share=off", "XFS", "reflinkfs/XFS", "share=off/XFS"}}
		ms := []measure{{mUncachedRead, "uncached throughput"}, {mCachedRead, "cached throughput"}, {mCachedSecs, "cached: time per GiB"},
			{mReaderCPU, "cached: reader CPU per GiB"}, {mDaemonCPU, "cached: daemon CPU per GiB"}, {mDaemonCPUUnc, "uncached: daemon CPU per GiB"}}
		for _, cs := range rec.Cases(WorkloadRead, mCachedRead) {
			if !isCloneCase(cs) {
				continue
			}
			for _, m := range ms {
				row := multiRow(rec, WorkloadRead, cs, m.name, keys, func(m *Metric) string { return fmtValue(m.Unit, m.Median) }, strings.TrimSuffix(cs, ", clone"), m.label)
				x := rec.Get(WorkloadRead, m.name, cs, fsXFS)
				row = append(row, fmtRatio(ratio(rec.Get(WorkloadRead, m.name, cs, fsReflinkfs), x)),
					fmtRatio(ratio(rec.Get(WorkloadRead, m.name, cs, fsReflinkfsOff), x)))
				t.Rows = append(t.Rows, row)
			}
		}
		t.Notes = []string{"A second file of the same size, cloned (copy_file_range on reflinkfs, FICLONE on XFS); the clone is read, in the same runs as table 3 " +
			"(caches dropped before each run; the first read is uncached, the second cached). reflinkfs mounted with the default share=readonly passes the " +
			"read-only open of a clone through to a backing file, whose page cache the kernel reads; with share=off (a remount, in the same run) the daemon serves " +
			"every read (FOPEN_DIRECT_IO), as table 3's unshared file is. The three are measured back to back, the two reflinkfs policies adjacent, the order reversed every run."}
		out = append(out, t)
	}
	if hasMetrics(rec, WorkloadMapped) {
		lib := float64(cfg.MappedLibSize)
		t := Table{Workload: WorkloadMapped,
			Title:   fmt.Sprintf("7. Mapped sharing: N processes, each running the executable of its own clone and mapping that clone's %s library (%s)", sizeLabel(cfg.MappedLibSize), runs),
			Columns: []string{"N", "measure (÷ one library)", fsNames[fsReflinkfs], fsNames[fsReflinkfsOff], fsNames[fsXFS], fsNames[fsOverlay]}}
		units := func(m *Metric) string { return fmtUnits(m.Median, lib) }
		plain := func(m *Metric) string { return fmtValue(m.Unit, m.Median) }
		ms := []struct {
			name, label string
			cell        func(*Metric) string
		}{
			{mMapCached, "page cache growth (/proc/meminfo Cached)", units},
			{mMapExact, "exact: cachestat of the files (reflinkfs: + backing files)", units},
			{mMapLib, "exact, the library alone", units},
			{mMapBacking, "of which backing files (stats backing_cached_bytes)", units},
			{mMapInode, "FUSE inodes' own pages (cachestat)", units},
			{mMapBackings, "backing files (stats)", plain},
			{mMapRSS, "daemon RSS growth", units},
			{mMapStart, "start until all N have mapped", plain},
		}
		for _, cs := range rec.Cases(WorkloadMapped, mMapExact) {
			for _, m := range ms {
				t.Rows = append(t.Rows, multiRow(rec, WorkloadMapped, cs, m.name, mappedKeys, m.cell, strings.TrimPrefix(cs, "N="), m.label))
			}
		}
		t.Notes = []string{"Each clone is a tree holding the library (random bytes) and the executable, a small static Go program built by the bench, which maps the library " +
			"(MAP_PRIVATE, PROT_READ, as the dynamic loader does), reads one byte of every page and stays alive; all N run at once. Clones: cp -a --reflink=always on XFS, " +
			"reflinkfs clone -r on reflinkfs (share=off reads the same clones after a remount); overlayfs: N mounts over one lower tree on the XFS file system, each with its own upper directory. " +
			"Before each measurement: sync, the daemon's block cache dropped, echo 3 > drop_caches. Growth is from just before the N processes start to when all have mapped; " +
			"/proc/meminfo is machine-wide (other processes add noise, both ways), the cachestat figures are exact: XFS the sum over the N clones' files, overlayfs the lower files " +
			"(an overlay inode holds no pages), reflinkfs the FUSE inodes' own pages plus the growth of the backing files' page cache reported by the daemon. " +
			"The daemon's block cache is anonymous memory, not page cache: its growth shows in the RSS row."}
		out = append(out, t)
	}
	if hasMetrics(rec, WorkloadOpen) {
		keys := []string{fsReflinkfs, fsReflinkfsOff, fsXFS}
		t := Table{Workload: WorkloadOpen, Title: fmt.Sprintf("3c. open(2) of a never-opened clone, read-only: the first open vs later ones (%s)", runs),
			Columns: []string{"file", "measure", "reflinkfs (passthrough)", "reflinkfs share=off", "XFS"}}
		plain := func(m *Metric) string { return fmtValue(m.Unit, m.Median) }
		for _, cs := range rec.Cases(WorkloadOpen, mFirstOpen) {
			t.Rows = append(t.Rows,
				multiRow(rec, WorkloadOpen, cs, mFirstOpen, keys, plain, cs, "first open (reflinkfs: takes the snapshot, registers the backing)"),
				multiRow(rec, WorkloadOpen, cs, mLaterOpen, keys, plain, cs, fmt.Sprintf("later open (median of %d per run)", laterOpens)))
			row := []string{cs, "first − later"}
			for _, k := range keys {
				row = append(row, fmtSeconds(medianOf(rec.Get(WorkloadOpen, mFirstOpen, cs, k))-medianOf(rec.Get(WorkloadOpen, mLaterOpen, cs, k))))
			}
			t.Rows = append(t.Rows, row)
		}
		t.Notes = []string{"A fresh clone of a contiguous file each run; on reflinkfs the image is remounted first, so no backing file of that content exists " +
			"(an unused one is kept 10 s), and the clone is stat'ed before the timed open so the lookup is not in it. Later opens: the same file opened and closed again; " +
			"on reflinkfs with passthrough they reuse the backing file."}
		out = append(out, t)
	}
	return out
}

// hasCloneReads reports whether the read workload measured a clone.
func hasCloneReads(rec *Recorder) bool {
	return slices.ContainsFunc(rec.Cases(WorkloadRead, mCachedRead), isCloneCase)
}

// passthroughTargets checks DESIGN.md's mapped-sharing targets.
func passthroughTargets(rec *Recorder) []TargetCheck {
	var out []TargetCheck
	label := fmt.Sprintf("mapped sharing: N processes mapping N clones hold ≤ %.1f× one copy in the page cache (every N)", mappedSharingTarget)
	if cases := rec.Cases(WorkloadMapped, mMapExact); len(cases) > 0 {
		out = append(out, mappedVerdict(rec, cases, label))
	} else {
		out = append(out, TargetCheck{Target: label, Verdict: "not measured"})
	}
	label = fmt.Sprintf("cached reads of shared files ≥ %.1f× XFS's page cache", sharedReadTarget)
	var parts []string
	ok, measured := true, false
	for _, cs := range rec.Cases(WorkloadRead, mCachedRead) {
		if !isCloneCase(cs) {
			continue
		}
		rf, x := rec.Get(WorkloadRead, mCachedRead, cs, fsReflinkfs), rec.Get(WorkloadRead, mCachedRead, cs, fsXFS)
		if rf == nil || x == nil {
			continue
		}
		measured = true
		r := ratio(rf, x)
		ok = ok && r >= sharedReadTarget
		parts = append(parts, fmt.Sprintf("%s: reflinkfs %s, XFS %s = %s (share=off %s)", strings.TrimSuffix(cs, ", clone"),
			fmtValue(unitBPS, rf.Median), fmtValue(unitBPS, x.Median), fmtRatio(r),
			fmtRatio(ratio(rec.Get(WorkloadRead, mCachedRead, cs, fsReflinkfsOff), x))))
	}
	v := "not measured"
	if measured {
		v = verdictOf(ok)
	}
	return append(out, TargetCheck{Target: label, Measured: strings.Join(parts, "; "), Verdict: v})
}

func verdictOf(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// mappedVerdict judges the exact (cachestat) figure of reflinkfs at every
// N; the machine-wide meminfo growth and the others are shown beside it.
func mappedVerdict(rec *Recorder, cases []string, label string) TargetCheck {
	ok, measured := true, false
	var parts []string
	for _, cs := range cases {
		unit := medianOf(rec.Get(WorkloadMapped, mMapUnit, cs, fsReflinkfs))
		rf := rec.Get(WorkloadMapped, mMapExact, cs, fsReflinkfs)
		if rf == nil || !(unit > 0) {
			continue
		}
		measured = true
		u := rf.Median / unit
		ok = ok && u <= mappedSharingTarget
		p := fmt.Sprintf("%s: reflinkfs %s (meminfo %s)", cs, fmtRatio(u), fmtRatio(medianOf(rec.Get(WorkloadMapped, mMapCached, cs, fsReflinkfs))/unit))
		for _, k := range []string{fsReflinkfsOff, fsXFS, fsOverlay} {
			if m := rec.Get(WorkloadMapped, mMapExact, cs, k); m != nil {
				p += fmt.Sprintf(", %s %s", fsNames[k], fmtRatio(m.Median/unit))
			}
		}
		parts = append(parts, p)
	}
	v := "not measured"
	if measured {
		v = verdictOf(ok)
	}
	return TargetCheck{Target: label, Measured: "exact page cache ÷ one library: " + strings.Join(parts, "; "), Verdict: v}
}

// passthroughPlots draws the mapped-sharing and clone-read plots.
func passthroughPlots(rec *Recorder, cfg *Config, dir string, keep func(string, bool, error)) {
	lib := float64(cfg.MappedLibSize)
	if hasMetrics(rec, WorkloadMapped) && lib > 0 {
		var ss []series
		for _, k := range mappedKeys {
			ss = append(ss, collectSeries(rec, WorkloadMapped, mMapExact, k, fsNames[k]+" (cachestat)", 1/lib, false))
		}
		ss = append(ss, collectSeries(rec, WorkloadMapped, mMapCached, fsReflinkfs, "reflinkfs (meminfo Cached)", 1/lib, false))
		path := filepath.Join(dir, "mapped-sharing.png")
		ok, err := linePlot(path, fmt.Sprintf("Page cache of N processes mapping a %s library from N clones", sizeLabel(cfg.MappedLibSize)),
			"N processes (N clones)", "page cache growth ÷ one library", false, false, ss...)
		keep(path, ok, err)
	}
	if cats, vals := cloneReadBars(rec); len(cats) > 0 {
		path := filepath.Join(dir, "read-clone.png")
		keep(path, true, barPlot(path, "Sequential read of a clone", "GB/s", cats,
			barGroup{"XFS", vals[0]}, barGroup{"reflinkfs passthrough", vals[1]}, barGroup{"reflinkfs share=off", vals[2]}))
	}
}

// cloneReadBars returns the clone-read categories and GB/s values of XFS,
// reflinkfs and reflinkfs share=off (0 where one was not measured).
func cloneReadBars(rec *Recorder) ([]string, [3]plotter.Values) {
	var cats []string
	var vals [3]plotter.Values
	for _, cs := range rec.Cases(WorkloadRead, mCachedRead) {
		if !isCloneCase(cs) {
			continue
		}
		for _, m := range []struct{ name, label string }{{mUncachedRead, "uncached"}, {mCachedRead, "cached"}} {
			if rec.Get(WorkloadRead, m.name, cs, fsXFS) == nil {
				continue
			}
			cats = append(cats, m.label+", "+strings.TrimSuffix(cs, ", clone"))
			for i, k := range []string{fsXFS, fsReflinkfs, fsReflinkfsOff} {
				v := 0.0
				if x := rec.Get(WorkloadRead, m.name, cs, k); x != nil {
					v = x.Median / 1e9
				}
				vals[i] = append(vals[i], v)
			}
		}
	}
	return cats, vals
}
