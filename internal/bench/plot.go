package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// series is one named line of a plot: medians of one metric across cases.
type series struct {
	label string
	xy    plotter.XYs
}

// collectSeries gathers the (X, median*scale) points of metric name on fs,
// sorted by X, skipping points a log axis cannot show when logY.
func collectSeries(rec *Recorder, w, name, fs, label string, scale float64, logY bool) series {
	return collectCases(rec, w, name, fs, "", label, scale, logY)
}

// collectCases is collectSeries restricted to cases ending in suffix.
func collectCases(rec *Recorder, w, name, fs, suffix, label string, scale float64, logY bool) series {
	s := series{label: label}
	for _, m := range rec.Metrics() {
		if m.Workload != w || m.Name != name || m.FS != fs || !strings.HasSuffix(m.Case, suffix) || math.IsNaN(m.Median) {
			continue
		}
		y := m.Median * scale
		if logY && y <= 0 {
			continue
		}
		s.xy = append(s.xy, plotter.XY{X: m.X, Y: y})
	}
	sort.Slice(s.xy, func(i, j int) bool { return s.xy[i].X < s.xy[j].X })
	return s
}

// linePlot draws the non-empty series into path; false if all were empty.
func linePlot(path, title, xLabel, yLabel string, logX, logY bool, ss ...series) (bool, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = ticks125{}
	}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = ticks125{}
	}
	p.Add(plotter.NewGrid())
	legend := plot.NewLegend()
	n := 0
	for i, s := range ss {
		if len(s.xy) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(s.xy)
		if err != nil {
			return false, err
		}
		line.Color = plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		legend.Add(s.label, line, points)
		n++
	}
	if n == 0 {
		return false, nil
	}
	if !logY {
		p.Y.Min = 0
	}
	return true, savePlot(p, &legend, n, path)
}

// savePlot writes the plot as a PNG with its legend in a strip below it,
// where it cannot cover any line.
func savePlot(p *plot.Plot, legend *plot.Legend, entries int, path string) error {
	const width, height = 7 * vg.Inch, 4.5 * vg.Inch
	legend.Top, legend.Left = true, true
	legend.XOffs = vg.Points(40)
	strip := vg.Points(13)*vg.Length(entries) + vg.Points(6)
	img := vgimg.New(width, height+strip)
	dc := draw.New(img)
	p.Draw(draw.Crop(dc, 0, 0, strip, 0))
	legend.Draw(draw.Crop(dc, 0, 0, 0, -(height)))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ticks125 marks a log axis at 1, 2 and 5 times powers of ten (labelled)
// and the other integers of each decade (unlabelled); a range too narrow
// for two labels gets its ends labelled.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	labelled := 0
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow(10, e)
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = tickLabel(v)
				labelled++
			}
			ticks = append(ticks, t)
		}
	}
	if labelled < 2 {
		ticks = append(ticks, plot.Tick{Value: lo, Label: strconv.FormatFloat(lo, 'g', 2, 64)},
			plot.Tick{Value: hi, Label: strconv.FormatFloat(hi, 'g', 2, 64)})
	}
	return ticks
}

func tickLabel(v float64) string {
	if v >= 1 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// barGroup is one bar series of a grouped bar chart.
type barGroup struct {
	label  string
	values plotter.Values
}

func barPlot(path, title, yLabel string, categories []string, groups ...barGroup) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Add(plotter.NewGrid())
	legend := plot.NewLegend()
	width := vg.Points(24)
	for i, g := range groups {
		b, err := plotter.NewBarChart(g.values, width)
		if err != nil {
			return err
		}
		b.Color = plotutil.Color(i)
		b.LineStyle.Width = 0
		b.Offset = width * vg.Length(float64(i)-float64(len(groups)-1)/2)
		p.Add(b)
		legend.Add(g.label, b)
	}
	p.NominalX(categories...)
	p.Y.Min = 0
	return savePlot(p, &legend, len(groups), path)
}

// drawPlots writes the PNG plots for whatever the run measured and returns
// their paths.
func drawPlots(rec *Recorder, cfg *Config, dir string) ([]string, error) {
	var paths []string
	var errs []error
	keep := func(path string, ok bool, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(path), err))
		} else if ok {
			paths = append(paths, path)
		}
	}
	const gib = 1.0 / (1 << 30)

	path := filepath.Join(dir, "memory-vs-clones.png")
	ok, err := linePlot(path, fmt.Sprintf("Memory held after reading a %s file and N clones", sizeLabel(cfg.MemFileSize)),
		"N clones (N+1 files read)", "GiB held", false, false,
		collectSeries(rec, WorkloadMemory, mHeld, fsXFS, "XFS page cache", gib, false),
		collectSeries(rec, WorkloadMemory, mHeld, fsReflinkfs, "reflinkfs block cache", gib, false),
		collectSeries(rec, WorkloadMemory, mRSSGrowth, fsReflinkfs, "reflinkfs daemon RSS growth", gib, false))
	keep(path, ok, err)

	path = filepath.Join(dir, "clone-vs-size.png")
	ok, err = linePlot(path, "Clone of a contiguous file", "file size (GiB)", "clone time (ms)", true, true,
		scaleX(collectSeries(rec, WorkloadClone, mCloneCall, fsXFS, "XFS FICLONE", 1e3, true), gib),
		scaleX(collectSeries(rec, WorkloadClone, mCloneCall, fsReflinkfs, "reflinkfs copy_file_range (mount)", 1e3, true), gib),
		scaleX(librarySizeSeries(rec), gib))
	keep(path, ok, err)

	for _, p := range []struct{ file, title, name string }{
		{"clone-vs-extents.png", "Clone of a fragmented file", mCloneCall},
		{"delete-vs-extents.png", "Deleting the clone of a fragmented file (unlink + sync)", mDeleteSync},
	} {
		path = filepath.Join(dir, p.file)
		var ss []series
		for _, fs := range []struct{ key, name string }{{fsXFS, "XFS"}, {fsReflinkfs, "reflinkfs"}} {
			for _, layout := range []string{layoutRandom, layoutInterleaved} {
				ss = append(ss, collectCases(rec, WorkloadExtents, p.name, fs.key, " "+layout, fs.name+", "+layout+" layout", 1, true))
			}
		}
		ok, err = linePlot(path, p.title, "extents", "seconds", true, true, ss...)
		keep(path, ok, err)
	}

	if cats, xfsV, rfsV := throughputBars(rec); len(cats) > 0 {
		path = filepath.Join(dir, "read-throughput.png")
		keep(path, true, barPlot(path, "Sequential read throughput", "GB/s", cats,
			barGroup{"XFS", xfsV}, barGroup{"reflinkfs", rfsV}))
	}

	passthroughPlots(rec, cfg, dir, keep)

	var cowX, cowR plotter.Values
	for _, cs := range []string{caseUnshare, caseShared} {
		x, r := rec.Get(WorkloadCoW, mCoWTotal, cs, fsXFS), rec.Get(WorkloadCoW, mCoWTotal, cs, fsReflinkfs)
		if x == nil || r == nil {
			break
		}
		cowX, cowR = append(cowX, x.Median), append(cowR, r.Median)
	}
	if len(cowX) == 2 {
		path = filepath.Join(dir, "cow-overwrites.png")
		keep(path, true, barPlot(path, fmt.Sprintf("%d random 4 KiB overwrites + fsync", cfg.CoWWrites), "seconds",
			[]string{"unshared file", "fresh clone (shared)"}, barGroup{"XFS", cowX}, barGroup{"reflinkfs", cowR}))
	}
	return paths, errors.Join(errs...)
}

// librarySizeSeries is the library's clone time by contiguous file size
// (its fragmented-file row is keyed by extents, not size).
func librarySizeSeries(rec *Recorder) series {
	s := series{label: "reflinkfs library Clone"}
	for _, m := range rec.Metrics() {
		if m.Workload == WorkloadLibrary && m.Name == mCloneCall && m.FS == fsLibrary && rec.Get(WorkloadClone, mCloneCall, m.Case, fsXFS) != nil && m.Median > 0 {
			s.xy = append(s.xy, plotter.XY{X: m.X, Y: m.Median * 1e3})
		}
	}
	sort.Slice(s.xy, func(i, j int) bool { return s.xy[i].X < s.xy[j].X })
	return s
}

func scaleX(s series, f float64) series {
	out := series{label: s.label}
	for _, p := range s.xy {
		out.xy = append(out.xy, plotter.XY{X: p.X * f, Y: p.Y})
	}
	return out
}

// throughputBars returns the read workload's categories and GB/s values.
func throughputBars(rec *Recorder) (cats []string, xfsV, rfsV plotter.Values) {
	for _, cs := range rec.Cases(WorkloadRead, mCachedRead) {
		if isCloneCase(cs) {
			continue // read-clone.png
		}
		for _, m := range []struct{ name, label string }{{mUncachedRead, "uncached"}, {mCachedRead, "cached"}} {
			x, r := rec.Get(WorkloadRead, m.name, cs, fsXFS), rec.Get(WorkloadRead, m.name, cs, fsReflinkfs)
			if x == nil || r == nil {
				continue
			}
			cats = append(cats, m.label+", "+cs)
			xfsV = append(xfsV, x.Median/1e9)
			rfsV = append(rfsV, r.Median/1e9)
		}
	}
	return cats, xfsV, rfsV
}
