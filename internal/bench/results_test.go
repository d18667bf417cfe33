package bench

import (
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	if m := median([]float64{5, 1, 3}); m != 3 {
		t.Errorf("odd: %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("even: %v", m)
	}
	if !math.IsNaN(median(nil)) {
		t.Error("empty: want NaN")
	}
	s := []float64{3, 1, 2}
	median(s)
	if s[0] != 3 {
		t.Error("median sorted its argument in place")
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder()
	r.Add("w", "m", "b", 2, fsXFS, unitBytes, 10)
	r.Add("w", "m", "a", 1, fsXFS, unitBytes, 1)
	r.Add("w", "m", "b", 2, fsXFS, unitBytes, 30)
	r.AddDuration("w", "t", "b", 2, fsReflinkfs, 1500*time.Millisecond)
	r.Add("w", "m", "b", 2, fsXFS, unitBytes, 20)
	m := r.Get("w", "m", "b", fsXFS)
	if m == nil || len(m.Samples) != 3 || m.Median != 20 || m.X != 2 {
		t.Fatalf("metric: %+v", m)
	}
	if got := r.Get("w", "t", "b", fsReflinkfs); got.Unit != unitSeconds || got.Median != 1.5 {
		t.Fatalf("duration metric: %+v", got)
	}
	if r.Get("w", "m", "b", fsReflinkfs) != nil {
		t.Fatal("Get invented a metric")
	}
	if cs := r.Cases("w", "m"); strings.Join(cs, ",") != "b,a" {
		t.Fatalf("cases in first-seen order: %v", cs)
	}
	if len(r.Metrics()) != 3 {
		t.Fatalf("%d metrics", len(r.Metrics()))
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		unit string
		v    float64
		want string
	}{
		{unitSeconds, 0.0000456, "45.6 µs"},
		{unitSeconds, 0.01234, "12.34 ms"},
		{unitSeconds, 6.3, "6.30 s"},
		{unitSeconds, 250, "250 s"},
		{unitBytes, 1 << 30, "1.00 GiB"},
		{unitBytes, 3 << 20, "3.0 MiB"},
		{unitBytes, -(5 << 20), "-5.0 MiB"},
		{unitBytes, 100, "100 B"},
		{unitBPS, 4.2e9, "4.20 GB/s"},
		{unitOPS, 66000, "66.0k/s"},
		{unitOPS, 950, "950/s"},
		{unitCount, 262144, "262144"},
		{unitRatio, 1.234, "1.23×"},
		{unitRatio, 17, "17.0×"},
		{unitRatio, 1765.4, "1765×"},
		{unitSeconds, math.NaN(), "—"},
	} {
		if got := fmtValue(c.unit, c.v); got != c.want {
			t.Errorf("fmtValue(%s, %v) = %q, want %q", c.unit, c.v, got, c.want)
		}
	}
	if got := sizeLabel(64 << 20); got != "64 MiB" {
		t.Errorf("sizeLabel: %q", got)
	}
	if got := sizeLabel(1 << 30); got != "1 GiB" {
		t.Errorf("sizeLabel: %q", got)
	}
	if got := sizeLabel(128 << 10); got != "128 KiB" {
		t.Errorf("sizeLabel: %q", got)
	}
	if !math.IsNaN(ratio(&Metric{Median: 1}, &Metric{Median: 0})) || !math.IsNaN(ratio(nil, &Metric{Median: 1})) {
		t.Error("ratio with a missing or zero divisor must be NaN")
	}
}

func TestTableMarkdown(t *testing.T) {
	tbl := Table{Title: "T", Columns: []string{"case", "a", "b"}, Rows: [][]string{{"x|y", "1"}}, Notes: []string{"note"}}
	got := tbl.Markdown()
	want := "### T\n\n| case | a | b |\n|---|--:|--:|\n| x\\|y | 1 |  |\n\nnote\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestWriteJSONKeepsEverySample(t *testing.T) {
	dir := t.TempDir()
	r := newRecorder()
	for _, v := range []float64{3, 1, 2} {
		r.Add("clone", "clone_call", "1 GiB", 1<<30, fsXFS, unitSeconds, v)
	}
	res := &Results{Mode: "quick", Runs: 3, Metrics: r.Metrics(), Config: DefaultConfig(true)}
	res.Config.Stdout = os.Stdout // must not be serialised
	path, err := writeJSON(dir, res)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Metrics) != 1 || len(back.Metrics[0].Samples) != 3 || back.Metrics[0].Median != 2 || back.Metrics[0].Samples[0] != 3 {
		t.Fatalf("metrics: %+v", back.Metrics)
	}
	if back.Config.MemFileSize != 256<<20 || back.Config.Runs != 3 {
		t.Fatalf("config: %+v", back.Config)
	}
}
