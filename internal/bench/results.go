package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// File system keys of a Metric.
const (
	fsReflinkfs = "reflinkfs"
	fsXFS       = "xfs"
	fsLibrary   = "library" // the engine through its Go API (enginebench)
)

// Units of a Metric.
const (
	unitSeconds = "s"
	unitBytes   = "B"
	unitBPS     = "B/s"
	unitOPS     = "ops/s"
	unitCount   = "count"
	unitRatio   = "ratio"
)

// Metric is one measured quantity of one case on one file system, with
// every sample.
type Metric struct {
	Workload string    `json:"workload"`
	Name     string    `json:"name"`
	Case     string    `json:"case"`
	X        float64   `json:"x,omitempty"` // the case's numeric parameter (size, N, extents), for plots
	FS       string    `json:"fs"`
	Unit     string    `json:"unit"`
	Samples  []float64 `json:"samples"`
	Median   float64   `json:"median"`
	Note     string    `json:"note,omitempty"`
}

// Recorder collects metrics in insertion order.
type Recorder struct {
	metrics []*Metric
	index   map[string]*Metric
}

func newRecorder() *Recorder { return &Recorder{index: map[string]*Metric{}} }

func metricKey(workload, name, cse, fs string) string {
	return workload + "\x00" + name + "\x00" + cse + "\x00" + fs
}

// Add appends a sample to the metric (workload, name, case, fs), creating
// it with unit and x on first use.
func (r *Recorder) Add(workload, name, cse string, x float64, fs, unit string, v float64) *Metric {
	k := metricKey(workload, name, cse, fs)
	m := r.index[k]
	if m == nil {
		m = &Metric{Workload: workload, Name: name, Case: cse, X: x, FS: fs, Unit: unit}
		r.index[k] = m
		r.metrics = append(r.metrics, m)
	}
	m.Samples = append(m.Samples, v)
	m.Median = median(m.Samples)
	return m
}

// AddDuration records a duration sample in seconds.
func (r *Recorder) AddDuration(workload, name, cse string, x float64, fs string, d time.Duration) {
	r.Add(workload, name, cse, x, fs, unitSeconds, d.Seconds())
}

// Get returns a metric or nil.
func (r *Recorder) Get(workload, name, cse, fs string) *Metric {
	return r.index[metricKey(workload, name, cse, fs)]
}

// Cases lists the distinct cases of a workload's metric name, in first-seen
// order.
func (r *Recorder) Cases(workload, name string) []string {
	var out []string
	for _, m := range r.metrics {
		if m.Workload == workload && m.Name == name && !slices.Contains(out, m.Case) {
			out = append(out, m.Case)
		}
	}
	return out
}

// Metrics returns all metrics in insertion order.
func (r *Recorder) Metrics() []*Metric { return r.metrics }

// median of samples (mean of the middle two for an even count); NaN if none.
func median(samples []float64) float64 {
	if len(samples) == 0 {
		return math.NaN()
	}
	s := slices.Clone(samples)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Machine describes where the run happened.
type Machine struct {
	Kernel     string `json:"kernel"`
	CPUModel   string `json:"cpu_model"`
	CPUs       int    `json:"cpus"`
	MemBytes   int64  `json:"mem_bytes"`
	GoVersion  string `json:"go_version"`
	Revision   string `json:"revision,omitempty"` // VCS revision of the reflinkfs binary
	Binary     string `json:"binary,omitempty"`   // reflinkfs version
	MkfsXFS    string `json:"mkfs_xfs,omitempty"` // mkfs.xfs -V
	Filesystem string `json:"scratch_fs,omitempty"`
}

// Results is the JSON file of a run.
type Results struct {
	Command     []string          `json:"command"`
	Mode        string            `json:"mode"`
	Runs        int               `json:"runs"`
	Started     time.Time         `json:"started"`
	Finished    time.Time         `json:"finished"`
	Machine     Machine           `json:"machine"`
	Setup       map[string]string `json:"setup"`
	Config      Config            `json:"config"`
	Metrics     []*Metric         `json:"metrics"`
	Tables      []Table           `json:"tables"`
	Targets     []TargetCheck     `json:"targets"`
	Notes       []string          `json:"notes,omitempty"`
	Errors      map[string]string `json:"errors,omitempty"` // workload id -> error
	LibraryText string            `json:"library_text,omitempty"`
	Profiles    map[string]string `json:"profiles,omitempty"` // name -> top of perf report
	Plots       []string          `json:"plots,omitempty"`
}

// writeJSON writes results to dir/results.json.
func writeJSON(dir string, res *Results) (string, error) {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "results.json")
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// Formatting of figures for tables.

func fmtValue(unit string, v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	switch unit {
	case unitSeconds:
		return fmtSeconds(v)
	case unitBytes:
		return fmtBytes(v)
	case unitBPS:
		return fmt.Sprintf("%.2f GB/s", v/1e9)
	case unitOPS:
		if v >= 1000 {
			return fmt.Sprintf("%.1fk/s", v/1000)
		}
		return fmt.Sprintf("%.0f/s", v)
	case unitCount:
		return fmt.Sprintf("%.0f", v)
	case unitRatio:
		return fmtRatio(v)
	}
	return fmt.Sprintf("%g %s", v, unit)
}

func fmtSeconds(s float64) string {
	switch {
	case s < 0:
		return "-" + fmtSeconds(-s)
	case s == 0:
		return "0"
	case s < 1e-3:
		return fmt.Sprintf("%.1f µs", s*1e6)
	case s < 1:
		return fmt.Sprintf("%.2f ms", s*1e3)
	case s < 100:
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.0f s", s)
}

func fmtBytes(b float64) string {
	neg := ""
	if b < 0 {
		neg, b = "-", -b
	}
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%s%.2f GiB", neg, b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%s%.1f MiB", neg, b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%s%.1f KiB", neg, b/(1<<10))
	}
	return fmt.Sprintf("%s%.0f B", neg, b)
}

func fmtRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "—"
	}
	if r >= 100 {
		return fmt.Sprintf("%.0f×", r)
	}
	if r >= 10 {
		return fmt.Sprintf("%.1f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

// sizeLabel names a file size in a case label: "64 MiB", "1 GiB".
func sizeLabel(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", b>>10)
	}
	return fmt.Sprintf("%d B", b)
}

// ratio of two medians, NaN when either is missing or the divisor is 0.
func ratio(num, den *Metric) float64 {
	if num == nil || den == nil || den.Median == 0 {
		return math.NaN()
	}
	return num.Median / den.Median
}

func medianOf(m *Metric) float64 {
	if m == nil {
		return math.NaN()
	}
	return m.Median
}

// Table is one rendered table of the report.
type Table struct {
	Workload string     `json:"workload"`
	Title    string     `json:"title"`
	Columns  []string   `json:"columns"`
	Rows     [][]string `json:"rows"`
	Notes    []string   `json:"notes,omitempty"`
}

// Markdown renders the table (title as a level-3 heading, then notes).
func (t Table) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", t.Title)
	b.WriteString("| " + strings.Join(t.Columns, " | ") + " |\n")
	b.WriteString("|")
	for i := range t.Columns {
		if i == 0 {
			b.WriteString("---|")
		} else {
			b.WriteString("--:|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		cells := make([]string, len(t.Columns))
		for i := range cells {
			if i < len(r) {
				cells[i] = strings.ReplaceAll(r[i], "|", `\|`)
			}
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	for i, n := range t.Notes {
		if i == 0 {
			b.WriteString("\n")
		}
		b.WriteString(n + "\n")
	}
	return b.String()
}

// TargetCheck is one DESIGN.md target against this run's figures.
type TargetCheck struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"` // "met", "missed", "not measured", "unreliable"
}
