package crashtest

// Damaged metadata: individual records rewritten with bad values (through
// the store, so pebble's own files stay valid), and pebble's files damaged
// on disk (flips, truncation, removal), the latter checked in a child
// process so that a panic on any goroutine or a hang is caught and reported
// instead of killing the test binary.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reflinkfs/reflinkfs"
	"github.com/reflinkfs/reflinkfs/internal/kv"
	"github.com/reflinkfs/reflinkfs/internal/meta"
)

// childEnv names a file listing, one per line, the images a child process
// inspects.
const childEnv = "CRASHTEST_CORRUPTION_CHILD_LIST"

var execCommand = exec.CommandContext

// childReport is what TestCorruptionChild found in a damaged image.
type childReport struct {
	// As `reflinkfs fsck` opens (read-only, recovery mode).
	FsckOpenErr  string
	FsckErr      string
	FsckProblems []string
	// As a mount opens.
	OpenErr        string
	Entries        map[string]string // see summarize
	ChecksumErrors int64
	MountFsckErr   string
	MountProblems  []string
}

const (
	childBegin  = "CHILD-BEGIN "
	childMarker = "CHILD-REPORT "
)

// parseChild reads a child's output: the reports by index, and the index
// of an image it began and did not finish (-1 if none).
func parseChild(out []byte) (map[int]childReport, int) {
	reports := map[int]childReport{}
	begun := -1
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, childBegin); ok {
			fmt.Sscan(rest, &begun)
		}
		if rest, ok := strings.CutPrefix(line, childMarker); ok {
			var i int
			var rep childReport
			idx, js, _ := strings.Cut(rest, " ")
			if _, err := fmt.Sscan(idx, &i); err == nil && json.Unmarshal([]byte(js), &rep) == nil {
				reports[i] = rep
				if i == begun {
					begun = -1
				}
			}
		}
	}
	return reports, begun
}

// inspectInChildren inspects each image in a child process running this
// test binary's TestCorruptionChild, several images per process, so that a
// panic on any goroutine or a hang is caught and blamed on the image being
// inspected, and the others still get inspected (in a new child). It
// returns, per image, the report or the failure.
func inspectInChildren(t *testing.T, dirs []string) ([]childReport, []string) {
	t.Helper()
	reports := make([]childReport, len(dirs))
	failures := make([]string, len(dirs))
	pending := make([]int, len(dirs))
	for i := range pending {
		pending[i] = i
	}
	for len(pending) > 0 {
		list := filepath.Join(t.TempDir(), "images")
		var lines []string
		for _, i := range pending {
			lines = append(lines, dirs[i])
		}
		if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second+time.Duration(len(pending))*5*time.Second)
		cmd := execCommand(ctx, os.Args[0], "-test.run=^TestCorruptionChild$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+list)
		out, err := cmd.CombinedOutput()
		hung := ctx.Err() != nil
		cancel()
		got, begun := parseChild(out)
		if begun < 0 && len(got) < len(pending) {
			begun = len(got) // died between images, or before the first
		}
		var next []int
		for j, i := range pending {
			switch rep, ok := got[j]; {
			case ok:
				reports[i] = rep
			case j == begun:
				what := "the child process died"
				if hung {
					what = "the child process hung (killed at its deadline)"
				}
				failures[i] = fmt.Sprintf("%s while inspecting this image (%v); output tail:\n%s", what, err, out[max(0, len(out)-4000):])
			default:
				next = append(next, i)
			}
		}
		pending = next
	}
	return reports, failures
}

// summarize replaces file contents in entries by a hash (reports stay small).
func summarize(es map[string]string) map[string]string {
	out := map[string]string{}
	for p, e := range es {
		if c, ok := strings.CutPrefix(e, "f:"); ok {
			e = "f:" + sum(c)
		}
		out[p] = e
	}
	return out
}

// inspect opens a damaged image the way fsck and mount do and reports what
// happened; shared by the child process and the in-process record tests.
func inspect(dir string) childReport {
	var rep childReport
	opt := quietOptions()
	opt.ReadOnly, opt.Recovery = true, true
	if fsys, err := reflinkfs.Open(dir, opt); err != nil {
		rep.FsckOpenErr = err.Error()
	} else {
		if r, err := fsys.Fsck(false); err != nil {
			rep.FsckErr = err.Error()
		} else {
			rep.FsckProblems = r.Problems
		}
		fsys.Close()
	}
	fsys, err := reflinkfs.Open(dir, quietOptions())
	if err != nil {
		rep.OpenErr = err.Error()
		return rep
	}
	defer fsys.Close()
	rep.Entries = summarize(entries(fsys))
	rep.ChecksumErrors = fsys.Stats().ChecksumErrors
	if r, err := fsys.Fsck(false); err != nil {
		rep.MountFsckErr = err.Error()
	} else {
		rep.MountProblems = r.Problems
	}
	return rep
}

// panicImage makes the child panic (to test that a panic is contained).
const panicImage = "/nonexistent/crashtest-panic-here"

// A panic in the child, on any goroutine, is blamed on the image being
// inspected, and the images after it are still inspected.
func TestChildPanicIsContained(t *testing.T) {
	img := sharedImage(t)
	dirs := []string{img.copyTo(t), panicImage, img.copyTo(t)}
	reports, failures := inspectInChildren(t, dirs)
	if failures[0] != "" || failures[2] != "" || reports[0].Entries == nil || reports[2].Entries == nil {
		t.Errorf("the images around the panicking one were not inspected: %q", failures)
	}
	if !strings.Contains(failures[1], "deliberate panic") {
		t.Errorf("the panic is not reported for its image: %q", failures[1])
	}
}

// TestCorruptionChild is the child process of inspectInChildren.
func TestCorruptionChild(t *testing.T) {
	list := os.Getenv(childEnv)
	if list == "" {
		t.Skip("helper process of the corruption tests")
	}
	b, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	for i, dir := range strings.Split(string(b), "\n") {
		fmt.Printf("\n%s%d\n", childBegin, i)
		if dir == panicImage {
			go panic("deliberate panic on another goroutine (TestChildPanicIsContained)")
			time.Sleep(time.Minute)
		}
		js, err := json.Marshal(inspect(dir))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("\n%s%d %s\n", childMarker, i, js)
	}
}

// judge applies the bad-input contract to what inspect found: a refusal is
// one line naming `reflinkfs fsck`; an image that opens shows every entry
// as some commit left it — the last, or an earlier one where damage dropped
// the latest commits (pebble takes a damaged WAL tail for a torn write) —
// or fails with EIO, never another content, and an entry is never missing
// unless some commit lacked it. It returns the violations and, separately,
// whether the damage went unnoticed (opened, fsck clean, no error) while
// showing a state other than the last commit's.
func judge(img *testImage, rep childReport) (violations []string, silent string) {
	if rep.FsckOpenErr != "" && !oneLine(rep.FsckOpenErr) {
		violations = append(violations, fmt.Sprintf("fsck's open error is not one line: %q", rep.FsckOpenErr))
	}
	if rep.FsckErr != "" && !oneLine(rep.FsckErr) {
		violations = append(violations, fmt.Sprintf("fsck error is not one line: %q", rep.FsckErr))
	}
	if rep.OpenErr != "" {
		if !oneLine(rep.OpenErr) || !strings.Contains(rep.OpenErr, "reflinkfs fsck") {
			violations = append(violations, fmt.Sprintf("open refused the image, but not with one line naming `reflinkfs fsck`: %q", rep.OpenErr))
		}
		return violations, ""
	}
	var versions []map[string]string
	for _, v := range img.versions {
		versions = append(versions, summarize(v))
	}
	final := versions[len(versions)-1]
	committed := func(p, e string) bool {
		for _, v := range versions {
			if v[p] == e {
				return true
			}
		}
		return false
	}
	absentSomewhere := func(p string) bool {
		for _, v := range versions {
			if _, ok := v[p]; !ok {
				return true
			}
		}
		return false
	}
	errored := func(p string) bool {
		if i := strings.IndexByte(p, '#'); i >= 0 {
			if strings.HasPrefix(rep.Entries[p[:i]+"#"], "e:") {
				return true // listing the attributes failed
			}
			p = p[:i]
		}
		for q := p; q != "."; q = filepath.Dir(q) {
			if strings.HasPrefix(rep.Entries[q], "e:") {
				return true
			}
		}
		return strings.HasPrefix(rep.Entries["."], "e:")
	}
	anyError := false // kept for the log below
	for _, p := range slices.Sorted(maps.Keys(rep.Entries)) {
		got := rep.Entries[p]
		if e, ok := strings.CutPrefix(got, "e:"); ok {
			anyError = true
			if !strings.Contains(e, "input/output error") {
				violations = append(violations, fmt.Sprintf("%s: error is not EIO: %s", p, e))
			}
			continue
		}
		if !committed(p, got) {
			violations = append(violations, fmt.Sprintf("%s: shows %.40q, which no commit left there (last: %.40q)", p, got, final[p]))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(final)) {
		if _, ok := rep.Entries[p]; !ok && !errored(p) && !absentSomewhere(p) {
			violations = append(violations, fmt.Sprintf("%s is silently missing", p))
		}
	}
	// Silent loss: an entry of the last commit shows an older state or is
	// gone, nothing reports an error on it, and fsck finds nothing.
	fsckClean := len(rep.MountProblems) == 0 && rep.MountFsckErr == ""
	var lost []string
	for _, p := range slices.Sorted(maps.Keys(final)) {
		if got, ok := rep.Entries[p]; fsckClean && got != final[p] && !errored(p) && !strings.HasPrefix(got, "e:") {
			if !ok {
				got = "missing"
			}
			lost = append(lost, fmt.Sprintf("%s (%.12s)", p, got))
		}
	}
	if len(lost) > 0 {
		silent = fmt.Sprintf("opened, fsck clean, and these entries silently show an older commit's state: %s", strings.Join(lost, ", "))
	}
	_ = anyError
	return violations, silent
}

// damageFile applies one kind of damage to a file.
func damageFile(path, kind string, rng *rand.Rand) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	switch kind {
	case "delete":
		return os.Remove(path)
	case "empty":
		b = nil
	case "truncate-half":
		b = b[:len(b)/2]
	case "truncate-last-byte":
		if len(b) > 0 {
			b = b[:len(b)-1]
		}
	case "flip-1":
		if len(b) > 0 {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
	case "flip-16":
		for range 16 {
			if len(b) > 0 {
				b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			}
		}
	case "zero-4k":
		if len(b) > 0 {
			off := rng.IntN(len(b))
			clear(b[off:min(len(b), off+4096)])
		}
	case "garbage-tail":
		for range 100 {
			b = append(b, byte(rng.Uint32()))
		}
	default:
		return fmt.Errorf("unknown damage %q", kind)
	}
	return os.WriteFile(path, b, 0o644)
}

var damageKinds = []string{"flip-1", "flip-16", "zero-4k", "truncate-half", "truncate-last-byte", "empty", "delete", "garbage-tail"}

// Pebble's files damaged on disk: every file of the store with every kind
// of damage, inspected in child processes.
func TestMetadataStoreFileDamage(t *testing.T) {
	img := sharedImage(t)
	names, err := os.ReadDir(filepath.Join(img.dir, "meta"))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var descs, dirs []string
	for _, n := range names {
		if n.Name() == "LOCK" {
			continue
		}
		for _, kind := range damageKinds {
			dir := img.copyTo(t)
			if err := damageFile(filepath.Join(dir, "meta", n.Name()), kind, rng); err != nil {
				t.Fatal(err)
			}
			descs = append(descs, fmt.Sprintf("meta/%s %s", n.Name(), kind))
			dirs = append(dirs, dir)
		}
	}
	reports, failures := inspectInChildren(t, dirs)
	var silent []string
	for i, desc := range descs {
		t.Run(strings.ReplaceAll(desc, "/", "_"), func(t *testing.T) {
			if failures[i] != "" {
				t.Fatalf("%s: %s", desc, failures[i])
			}
			rep := reports[i]
			v, s := judge(img, rep)
			for _, x := range v {
				t.Errorf("%s: %s", desc, x)
			}
			if s != "" {
				silent = append(silent, desc+": "+s)
			}
			t.Logf("open: %q; fsck open: %q, fsck problems %d, mount fsck problems %d", rep.OpenErr, rep.FsckOpenErr, len(rep.FsckProblems), len(rep.MountProblems))
		})
	}
	if len(silent) > 0 {
		t.Errorf("damage that went unnoticed and changed the committed state (silent data loss):\n\t%s", strings.Join(silent, "\n\t"))
	}
}

// Store-level damage: several files at once.
func TestMetadataStoreDamage(t *testing.T) {
	img := sharedImage(t)
	cases := []struct {
		name   string
		remove func(name string) bool
	}{
		{"every-sstable-deleted", func(n string) bool { return strings.HasSuffix(n, ".sst") }},
		{"every-wal-deleted", func(n string) bool { return strings.HasSuffix(n, ".log") }},
		{"every-manifest-deleted", func(n string) bool { return strings.HasPrefix(n, "MANIFEST") }},
		{"store-emptied", func(n string) bool { return true }},
	}
	var dirs []string
	for _, c := range cases {
		dir := img.copyTo(t)
		names, err := os.ReadDir(filepath.Join(dir, "meta"))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if c.remove(n.Name()) {
				if err := os.Remove(filepath.Join(dir, "meta", n.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}
		dirs = append(dirs, dir)
	}
	reports, failures := inspectInChildren(t, dirs)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if failures[i] != "" {
				t.Fatal(failures[i])
			}
			v, s := judge(img, reports[i])
			for _, x := range v {
				t.Error(x)
			}
			if s != "" {
				t.Error(s)
			}
		})
	}
}

// recordDamage is a way to spoil one record's value.
var recordDamage = []struct {
	name string
	fn   func(v []byte, rng *rand.Rand) []byte
}{
	{"flip", func(v []byte, rng *rand.Rand) []byte {
		v = bytes.Clone(v)
		if len(v) > 0 {
			v[rng.IntN(len(v))] ^= byte(1 + rng.IntN(255))
		}
		return v
	}},
	{"truncate", func(v []byte, rng *rand.Rand) []byte { return v[:len(v)/2] }},
	{"empty", func(v []byte, rng *rand.Rand) []byte { return nil }},
}

// damageRecord rewrites one record of the image's store whose key starts
// with prefix (the pick-th such key, modulo their number) and returns its
// key.
func damageRecord(dir string, prefix byte, pick int, fn func([]byte) []byte) ([]byte, error) {
	store, err := kv.OpenPebble(filepath.Join(dir, "meta"), kv.PebbleOptions{})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	it := store.NewIter([]byte{prefix}, []byte{prefix + 1})
	var keys, vals [][]byte
	for ok := it.First(); ok; ok = it.Next() {
		keys = append(keys, bytes.Clone(it.Key()))
		vals = append(vals, bytes.Clone(it.Value()))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, nil
	}
	i := pick % len(keys)
	txn := store.NewTxn()
	if err := txn.Set(keys[i], fn(vals[i])); err != nil {
		return nil, err
	}
	return keys[i], store.Commit(txn, true)
}

// Metadata records with bad values: of every record type, a damaged record
// is refused at open with a one-line error naming `reflinkfs fsck`, or
// reported by fsck with the affected entry returning EIO; nothing shows
// bytes never committed, and nothing is silently missing.
func TestMetadataRecordDamage(t *testing.T) {
	img := sharedImage(t)
	rng := rand.New(rand.NewPCG(6, 6))
	prefixes := []byte{meta.PrefixSuper, meta.PrefixInode, meta.PrefixDirent, meta.PrefixExtent, meta.PrefixRefcount,
		meta.PrefixFree, meta.PrefixChecksum, meta.PrefixXattr, meta.PrefixSymlink}
	for _, prefix := range prefixes {
		for _, d := range recordDamage {
			for _, pick := range []int{0, 1 + rng.IntN(1000)} {
				name := fmt.Sprintf("%c-%s-%d", prefix, d.name, pick)
				t.Run(name, func(t *testing.T) {
					dir := img.copyTo(t)
					key, err := damageRecord(dir, prefix, pick, func(v []byte) []byte { return d.fn(v, rng) })
					if err != nil {
						t.Fatal(err)
					}
					if key == nil {
						t.Skipf("the image has no %c record", prefix)
					}
					var rep childReport
					within(t, 30*time.Second, "inspect", func() { rep = inspect(dir) })
					v, silent := judge(img, rep)
					for _, x := range v {
						t.Errorf("record %x: %s", key, x)
					}
					if silent != "" {
						t.Errorf("record %x: %s", key, silent)
					}
					if rep.OpenErr == "" && len(rep.MountProblems) == 0 && rep.MountFsckErr == "" {
						t.Errorf("record %x is damaged, the image opened, and fsck reported nothing", key)
					}
					if rep.FsckOpenErr == "" && rep.FsckErr == "" && len(rep.FsckProblems) == 0 {
						t.Errorf("record %x is damaged and `reflinkfs fsck` (read-only, recovery) reports a clean image", key)
					}
					if prefix == meta.PrefixSuper && rep.OpenErr == "" {
						t.Errorf("an image with a damaged superblock was opened")
					}
					t.Logf("open: %q; fsck: open %q, err %q, %d problems", rep.OpenErr, rep.FsckOpenErr, rep.FsckErr, len(rep.FsckProblems))
				})
			}
		}
	}
}

// Mount refuses a damaged superblock naming `reflinkfs fsck` as the next
// step, so fsck must be able to open such an image and report on it (today
// it refuses with the same message, sending the user in a circle).
func TestFsckOpensImageWithDamagedSuperblock(t *testing.T) {
	img := sharedImage(t)
	dir := img.copyTo(t)
	if _, err := damageRecord(dir, meta.PrefixSuper, 0, func(v []byte) []byte { return v[:len(v)/2] }); err != nil {
		t.Fatal(err)
	}
	var rep childReport
	within(t, 30*time.Second, "inspect", func() { rep = inspect(dir) })
	if rep.OpenErr == "" {
		t.Fatal("an image with a damaged superblock was mounted")
	}
	if rep.FsckOpenErr != "" {
		t.Errorf("`reflinkfs fsck` cannot open the image the mount error sends the user to it with:\nmount: %s\nfsck:  %s", rep.OpenErr, rep.FsckOpenErr)
	} else if rep.FsckErr == "" && len(rep.FsckProblems) == 0 {
		t.Errorf("fsck reports a clean image with a damaged superblock")
	}
}
