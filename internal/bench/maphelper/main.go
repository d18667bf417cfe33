// Command maphelper is the executable of the bench's mapped workload
// (package bench embeds this file and builds it): it maps a library
// read-only, touches every page, prints "ready", and keeps the mapping
// until its standard input is closed; each line "stat" on its standard
// input makes it print "cache LIB EXE": the page cache bytes of the
// library's and its own executable's inodes (cachestat(2) on descriptors
// opened before the mapping: a later open of a FUSE file served with
// direct I/O would invalidate the pages it measures). It uses the standard
// library only, so it builds in an empty module.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"unsafe"
)

const sysCachestat = 451 // the same number on every architecture

// cachedBytes is cachestat(2) of the whole file open at fd, in bytes.
func cachedBytes(fd uintptr) int64 {
	var rng [2]uint64  // struct cachestat_range: off, len (0: to the end)
	var stat [5]uint64 // struct cachestat: nr_cache first
	_, _, errno := syscall.Syscall6(sysCachestat, fd, uintptr(unsafe.Pointer(&rng)), uintptr(unsafe.Pointer(&stat)), 0, 0, 0)
	if errno != 0 {
		return -1
	}
	return int64(stat[0]) * int64(os.Getpagesize())
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: maphelper LIBRARY")
		os.Exit(2)
	}
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		fmt.Fprintln(os.Stderr, "stat:", err, fi)
		os.Exit(1)
	}
	// MAP_PRIVATE and read-only, as the dynamic loader maps a library.
	b, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mmap:", err)
		os.Exit(1)
	}
	var sum byte
	for i := 0; i < len(b); i += 4096 {
		sum += b[i]
	}
	fmt.Printf("ready %d\n", sum)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) == "stat" {
			fmt.Printf("cache %d %d\n", cachedBytes(f.Fd()), cachedBytes(exe.Fd()))
		}
	}
	runtime.KeepAlive(b)
	runtime.KeepAlive(f)
	runtime.KeepAlive(exe)
}
