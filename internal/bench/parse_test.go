package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseFincoreJSON(t *testing.T) {
	out := `{
   "fincore": [
      {"res": 4096, "pages": 1, "size": 1073741824, "file": "/mnt/a"},
      {"res": "8192", "pages": "2", "size": "8192", "file": "/mnt/b c"}
   ]
}`
	got, err := parseFincoreJSON([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if got["/mnt/a"] != 4096 || got["/mnt/b c"] != 8192 || len(got) != 2 {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{`not json`, `{"fincore":[{"res":1}]}`, `{"fincore":[{"file":"x"}]}`, `{"fincore":[{"file":"x","res":"12k"}]}`} {
		if _, err := parseFincoreJSON([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestCountXFSIOExtents(t *testing.T) {
	out := "/mnt/xfs/holey:\n\t0: [0..7]: 6852672..6852679\n\t1: [8..1023]: hole\n\t2: [1024..1031]: 6852680..6852687\n"
	if n := countXFSIOExtents(out); n != 2 {
		t.Fatalf("got %d extents, want 2", n)
	}
	if n := countXFSIOExtents("/mnt/xfs/empty:\n"); n != 0 {
		t.Fatalf("empty file: got %d", n)
	}
}

func TestParseReflinkfsFiemap(t *testing.T) {
	out := `  LOGICAL    PHYSICAL      LENGTH  SHARED  FLAGS
        0           0     4096000  shared      -
  4096000  1073741824        4096      no      -
  4100096     4100096  1069641728  shared      -
3 extents, 1073741824 bytes mapped (1.00 GiB), 1073737728 bytes shared (1024 MiB)
`
	info, err := parseReflinkfsFiemapInfo(out)
	if err != nil {
		t.Fatal(err)
	}
	if info.Extents != 3 || info.SharedBytes != 1073737728 {
		t.Fatalf("got %+v", info)
	}
	info, err = parseReflinkfsFiemapInfo("  LOGICAL  PHYSICAL  LENGTH  SHARED  FLAGS\n0 extents, 0 bytes mapped (0 B), 0 bytes shared (0 B)\n")
	if err != nil || info.Extents != 0 {
		t.Fatalf("empty: %+v %v", info, err)
	}
	if n, err := parseReflinkfsFiemap("1 extent, 4096 bytes mapped (4.0 KiB), 0 bytes shared (0 B)"); err != nil || n != 1 {
		t.Fatalf("singular: %d %v", n, err)
	}
	if _, err := parseReflinkfsFiemap("reflinkfs: not a reflinkfs file\n"); err == nil {
		t.Fatal("garbage: no error")
	}
}

func TestParseKBField(t *testing.T) {
	status := "Name:\treflinkfs\nVmPeak:\t 2000000 kB\nVmRSS:\t  973320 kB\nThreads:\t10\n"
	if n, err := parseKBField(status, "VmRSS"); err != nil || n != 973320<<10 {
		t.Fatalf("VmRSS: %d %v", n, err)
	}
	if n, err := parseKBField(status, "Threads"); err != nil || n != 10 {
		t.Fatalf("a field without unit: %d %v", n, err)
	}
	if _, err := parseKBField(status, "VmSwap"); err == nil {
		t.Fatal("missing field: no error")
	}
	if _, err := parseKBField("VmRSS: lots kB\n", "VmRSS"); err == nil {
		t.Fatal("malformed: no error")
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis; utime 250, stime 50.
	stat := "4242 (re fl) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 369553 2998272 395"
	d, err := parseProcStatCPU(stat, 100)
	if err != nil {
		t.Fatal(err)
	}
	if d != 3*time.Second {
		t.Fatalf("got %v, want 3s", d)
	}
	if _, err := parseProcStatCPU("4242 (x) S 1 2", 100); err == nil {
		t.Fatal("short stat: no error")
	}
}

func TestParseCPUModel(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nprocessor\t: 1\nmodel name\t: other\n"
	if got := parseCPUModel(info); got != "Intel(R) Xeon(R) Processor" {
		t.Fatalf("got %q", got)
	}
	if got := parseCPUModel("processor : 0\n"); got != "unknown" {
		t.Fatalf("got %q", got)
	}
}

// enginebenchOutput is recorded output of enginebench.Run (quick).
const enginebenchOutput = `
Clone of a contiguous file through the library (median of 5)

       size  extents  clone  delete clone
   64.0 MiB        1   35µs          12µs
  256.0 MiB        1   49µs          14µs

Clone of a fragmented file (median of 5)

      size  extents     clone  delete clone  per extent
  64.0 MiB    11574  51.291ms      39.146ms     4.431µs

Cache memory after reading N clones of a 64.0 MiB file in full

  N    cached  cached / file  per-file cache would hold  read time
  1  64.0 MiB         1.000×                   64.0 MiB      111ms
  2  64.0 MiB         1.000×                  128.0 MiB      159ms
  8  64.0 MiB         1.000×                  512.0 MiB      258ms
`

func TestParseLibraryTables(t *testing.T) {
	lt, err := parseLibraryTables(enginebenchOutput)
	if err != nil {
		t.Fatal(err)
	}
	if len(lt.Clone) != 2 || lt.Clone[1] != (libraryClone{Size: 256 << 20, Extents: 1, Clone: 49 * time.Microsecond, Delete: 14 * time.Microsecond}) {
		t.Fatalf("clone rows: %+v", lt.Clone)
	}
	if len(lt.Frag) != 1 || lt.Frag[0].Extents != 11574 || lt.Frag[0].Clone != 51291*time.Microsecond {
		t.Fatalf("fragmented rows: %+v", lt.Frag)
	}
	if len(lt.Memory) != 3 || lt.Memory[2] != (libraryMemory{N: 8, Cached: 64 << 20, PerFile: 512 << 20, ReadTime: 258 * time.Millisecond}) {
		t.Fatalf("memory rows: %+v", lt.Memory)
	}
	if _, err := parseLibraryTables("nothing here\n"); err == nil {
		t.Fatal("no tables: no error")
	}
	broken := strings.Replace(enginebenchOutput, "35µs", "fast", 1)
	if _, err := parseLibraryTables(broken); err == nil {
		t.Fatal("malformed duration: no error")
	}
}

func TestParseHumanBytes(t *testing.T) {
	for in, want := range map[string]int64{"64.0 MiB": 64 << 20, "1 GiB": 1 << 30, "1.50 GiB": 3 << 29, "512 KiB": 512 << 10, "12 B": 12, "7": 7} {
		got, err := parseHumanBytes(in)
		if err != nil || got != want {
			t.Errorf("%q: got %d %v, want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"1 XB", "lots MiB"} {
		if _, err := parseHumanBytes(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestMountPoints(t *testing.T) {
	info := "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"90 22 0:50 / /var/tmp/with\\040space rw - fuse.reflinkfs /img rw\n"
	got := mountPoints(info)
	if len(got) != 2 || got[0] != "/" || got[1] != "/var/tmp/with space" {
		t.Fatalf("got %q", got)
	}
	if got := unescapeMountinfo(`a\134b\04`); got != `a\b\04` {
		t.Fatalf("got %q", got)
	}
}
