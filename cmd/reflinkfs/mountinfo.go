package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// mountEntry is one line of /proc/self/mountinfo (proc(5)).
type mountEntry struct {
	MountPoint string
	FsType     string
	Source     string
}

// readMountInfo parses /proc/self/mountinfo.
func readMountInfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountInfo(f)
}

// parseMountInfo parses the mountinfo format: ID PARENT MAJ:MIN ROOT
// MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS.
func parseMountInfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 6 || sep < 0 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("mountinfo: malformed line %q", sc.Text())
		}
		out = append(out, mountEntry{
			MountPoint: unescapeMountField(fields[4]),
			FsType:     unescapeMountField(fields[sep+1]),
			Source:     unescapeMountField(fields[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescapeMountField undoes the kernel's octal escapes (\040 for space,
// \011 tab, \012 newline, \134 backslash).
func unescapeMountField(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// findMount returns the topmost mount at path (the last one listed).
func findMount(entries []mountEntry, path string) (mountEntry, bool) {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].MountPoint == path {
			return entries[i], true
		}
	}
	return mountEntry{}, false
}

// lookupMount finds the mount at the user-given path. It compares the
// cleaned absolute path first and resolves symlinks only if that fails, so a
// hung mount is not touched when the path is given plainly.
func lookupMount(arg string) (mountEntry, string, error) {
	abs, err := filepath.Abs(arg)
	if err != nil {
		return mountEntry{}, "", err
	}
	entries, err := readMountInfo()
	if err != nil {
		return mountEntry{}, abs, err
	}
	if m, ok := findMount(entries, abs); ok {
		return m, abs, nil
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		if m, ok := findMount(entries, real); ok {
			return m, real, nil
		}
	}
	return mountEntry{}, abs, errNotMounted
}

var errNotMounted = fmt.Errorf("not a mount point")
