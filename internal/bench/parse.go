package bench

// Parsers of the text other programs and the kernel print. Each takes the
// text, not a path, so tests feed them recorded output.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// parseFincoreJSON reads `fincore --json --bytes` output and returns the
// bytes resident in the page cache per file. util-linux prints numbers as
// JSON numbers or, in some versions, as strings; both are accepted.
func parseFincoreJSON(data []byte) (map[string]int64, error) {
	var doc struct {
		Fincore []map[string]any `json:"fincore"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("fincore output: %w", err)
	}
	res := make(map[string]int64, len(doc.Fincore))
	for _, row := range doc.Fincore {
		file, _ := row["file"].(string)
		if file == "" {
			return nil, fmt.Errorf("fincore output: row without a file name")
		}
		n, err := jsonInt(row["res"])
		if err != nil {
			return nil, fmt.Errorf("fincore output: %s: res: %w", file, err)
		}
		res[file] = n
	}
	return res, nil
}

func jsonInt(v any) (int64, error) {
	switch x := v.(type) {
	case float64:
		return int64(x), nil
	case string:
		return strconv.ParseInt(strings.TrimSpace(x), 10, 64)
	case nil:
		return 0, fmt.Errorf("missing")
	}
	return 0, fmt.Errorf("unexpected %T", v)
}

// xfsIOExtentLine matches one mapped extent of `xfs_io -c fiemap`:
// "	3: [24..31]: 148104..148111" (holes end in ": hole").
var xfsIOExtentLine = regexp.MustCompile(`^\s*\d+: \[\d+\.\.\d+\]: (\d+\.\.\d+|hole)`)

// countXFSIOExtents counts the mapped (non-hole) extents in
// `xfs_io -r -c fiemap FILE` output.
func countXFSIOExtents(out string) int {
	n := 0
	for _, line := range strings.Split(out, "\n") {
		m := xfsIOExtentLine.FindStringSubmatch(line)
		if m != nil && m[1] != "hole" {
			n++
		}
	}
	return n
}

// reflinkfsFiemapSummary matches the last line of `reflinkfs fiemap`:
// "3 extents, 1073741824 bytes mapped (1.00 GiB), ...".
var reflinkfsFiemapSummary = regexp.MustCompile(`^(\d+) extents?, (\d+) bytes mapped`)

// parseReflinkfsFiemap returns the extent count from `reflinkfs fiemap`.
func parseReflinkfsFiemap(out string) (int, error) {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	m := reflinkfsFiemapSummary.FindStringSubmatch(last)
	if m == nil {
		return 0, fmt.Errorf("reflinkfs fiemap: no summary line in %q", last)
	}
	return strconv.Atoi(m[1])
}

// parseKBField returns a "Name:   123 kB" field of /proc/PID/status or
// /proc/meminfo, in bytes.
func parseKBField(text, name string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != name {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n <<= 10
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s field", name)
}

// parseProcStatCPU returns utime+stime of /proc/PID/stat, all threads
// included, given the clock tick rate (USER_HZ, 100 on Linux).
func parseProcStatCPU(stat string, ticksPerSecond int64) (time.Duration, error) {
	// The command name (field 2) may contain spaces and parentheses: fields
	// are counted after its closing parenthesis.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields", len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / time.Duration(ticksPerSecond), nil
}

// parseCPUModel returns the first "model name" of /proc/cpuinfo.
func parseCPUModel(cpuinfo string) string {
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return "unknown"
}

// libraryTables are the figures of internal/enginebench's printed tables.
type libraryTables struct {
	Clone  []libraryClone // contiguous files
	Frag   []libraryClone // fragmented file
	Memory []libraryMemory
}

type libraryClone struct {
	Size    int64
	Extents int
	Clone   time.Duration
	Delete  time.Duration
}

type libraryMemory struct {
	N        int
	Cached   int64
	PerFile  int64
	ReadTime time.Duration
}

// parseLibraryTables reads enginebench's output. enginebench prints text
// tables only (no structured results), so this follows its layout: a title
// line, a blank line, a header and right-aligned cells padded by at least
// two spaces.
func parseLibraryTables(text string) (libraryTables, error) {
	var lt libraryTables
	for _, tbl := range splitTextTables(text) {
		var err error
		switch {
		case strings.HasPrefix(tbl.title, "Clone of a contiguous file"):
			lt.Clone, err = parseLibraryCloneRows(tbl.rows)
		case strings.HasPrefix(tbl.title, "Clone of a fragmented file"):
			lt.Frag, err = parseLibraryCloneRows(tbl.rows)
		case strings.HasPrefix(tbl.title, "Cache memory after reading N clones"):
			lt.Memory, err = parseLibraryMemoryRows(tbl.rows)
		}
		if err != nil {
			return lt, fmt.Errorf("enginebench table %q: %w", tbl.title, err)
		}
	}
	if len(lt.Clone) == 0 && len(lt.Frag) == 0 && len(lt.Memory) == 0 {
		return lt, fmt.Errorf("enginebench output: no table found")
	}
	return lt, nil
}

type textTable struct {
	title string
	rows  [][]string // header excluded
}

var cellSep = regexp.MustCompile(`\s{2,}`)

func splitTextTables(text string) []textTable {
	var out []textTable
	blocks := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n\n")
	for i := 0; i+1 < len(blocks); i++ {
		title := strings.TrimSpace(blocks[i])
		if strings.Contains(title, "\n") || title == "" {
			continue
		}
		lines := strings.Split(strings.Trim(blocks[i+1], "\n"), "\n")
		if len(lines) < 2 {
			continue
		}
		t := textTable{title: title}
		for _, l := range lines[1:] {
			if strings.TrimSpace(l) == "" {
				continue
			}
			t.rows = append(t.rows, cellSep.Split(strings.TrimSpace(l), -1))
		}
		out = append(out, t)
		i++
	}
	return out
}

func parseLibraryCloneRows(rows [][]string) ([]libraryClone, error) {
	var out []libraryClone
	for _, r := range rows {
		if len(r) < 4 {
			return nil, fmt.Errorf("row %q: want at least 4 cells", r)
		}
		size, err := parseHumanBytes(r[0])
		if err != nil {
			return nil, err
		}
		ext, err := strconv.Atoi(r[1])
		if err != nil {
			return nil, err
		}
		c, err := time.ParseDuration(r[2])
		if err != nil {
			return nil, err
		}
		d, err := time.ParseDuration(r[3])
		if err != nil {
			return nil, err
		}
		out = append(out, libraryClone{Size: size, Extents: ext, Clone: c, Delete: d})
	}
	return out, nil
}

func parseLibraryMemoryRows(rows [][]string) ([]libraryMemory, error) {
	var out []libraryMemory
	for _, r := range rows {
		if len(r) < 5 {
			return nil, fmt.Errorf("row %q: want 5 cells", r)
		}
		n, err := strconv.Atoi(r[0])
		if err != nil {
			return nil, err
		}
		cached, err := parseHumanBytes(r[1])
		if err != nil {
			return nil, err
		}
		perFile, err := parseHumanBytes(r[3])
		if err != nil {
			return nil, err
		}
		rt, err := time.ParseDuration(r[4])
		if err != nil {
			return nil, err
		}
		out = append(out, libraryMemory{N: n, Cached: cached, PerFile: perFile, ReadTime: rt})
	}
	return out, nil
}

// parseHumanBytes reads "64.0 MiB", "1 GiB", "512 KiB", "12 B".
func parseHumanBytes(s string) (int64, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		unit = "B"
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	mult := map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit", s)
	}
	return int64(v*mult + 0.5), nil
}
