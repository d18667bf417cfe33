package fusefs

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Mapping files of a mount must not happen in the process serving it: a
// page fault on the mapping waits for this process's FUSE server, and the
// Go runtime cannot stop the faulting thread for a garbage collection (see
// mounttest.MmapHelper). The tests run mappings in a child: this test
// binary started again with mapperEnv set.
const mapperEnv = "REFLINKFS_FUSEFS_MAPPER"

func TestMain(m *testing.M) {
	if os.Getenv(mapperEnv) != "" {
		os.Exit(mapperMain(os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// mapperMain runs one mapper command (fields separated by \x1f):
//
//	map F1 F2...         map each file read-only and shared, touch every page,
//	                     print "SHA256 OWNCACHE" per file, then "mapped", and
//	                     keep the mappings until stdin closes
//	mapwrite F OFF TEXT  write TEXT at OFF through a MAP_SHARED mapping, msync
func mapperMain(cmd string) int {
	args := strings.Split(cmd, "\x1f")
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "mapper:", err); return 1 }
	switch args[0] {
	case "map":
		for _, name := range args[1:] {
			f, err := os.Open(name)
			if err != nil {
				return fail(err)
			}
			st, _ := f.Stat()
			m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				return fail(err)
			}
			sum := sha256.Sum256(m) // touches every page
			var cs unix.Cachestat_t
			if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &cs, 0); err != nil {
				return fail(err)
			}
			fmt.Printf("%s %d\n", hex.EncodeToString(sum[:]), int64(cs.Cache)*int64(os.Getpagesize()))
		}
		fmt.Println("mapped")
		io.Copy(io.Discard, os.Stdin)
		return 0
	case "mapwrite":
		off, _ := strconv.Atoi(args[2])
		f, err := os.OpenFile(args[1], os.O_RDWR, 0)
		if err != nil {
			return fail(err)
		}
		st, _ := f.Stat()
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fail(err)
		}
		copy(m[off:], args[3])
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return fail(err)
		}
		unix.Munmap(m)
		if err := f.Close(); err != nil {
			return fail(err)
		}
		fmt.Println("ok")
		return 0
	}
	return fail(fmt.Errorf("unknown command %q", args[0]))
}

// mapped is a child process holding mappings of files.
type mapped struct {
	cmd   *exec.Cmd
	stdin io.Closer
	Sums  []string // sha256 of each mapping
	Own   []int64  // bytes in each file's own (FUSE inode) page cache
}

func startMapper(t *testing.T, args ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$", strings.Join(args, "\x1f"))
	cmd.Env = append(os.Environ(), mapperEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, in, bufio.NewReader(out)
}

// mapFiles maps files in a child, which keeps them mapped until release.
func mapFiles(t *testing.T, files ...string) *mapped {
	t.Helper()
	cmd, in, out := startMapper(t, append([]string{"map"}, files...)...)
	m := &mapped{cmd: cmd, stdin: in}
	t.Cleanup(m.release)
	for {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("mapper: %v", err)
		}
		line = strings.TrimSpace(line)
		if line == "mapped" {
			return m
		}
		var sum string
		var own int64
		fmt.Sscan(line, &sum, &own)
		m.Sums = append(m.Sums, sum)
		m.Own = append(m.Own, own)
	}
}

// release unmaps (the child exits).
func (m *mapped) release() {
	if m.stdin != nil {
		m.stdin.Close()
		m.cmd.Wait()
		m.stdin = nil
	}
}

// mapWrite writes text at off of file through a MAP_SHARED mapping, in a child.
func mapWrite(t *testing.T, file string, off int, text string) {
	t.Helper()
	cmd, in, out := startMapper(t, "mapwrite", file, strconv.Itoa(off), text)
	in.Close()
	line, _ := out.ReadString('\n')
	if err := cmd.Wait(); err != nil || strings.TrimSpace(line) != "ok" {
		t.Fatalf("mapped write to %s: %v %q", file, err, line)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
