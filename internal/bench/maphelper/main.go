// Command maphelper is the executable of the bench's mapped workload
// (package bench embeds this file and builds it): it maps a library
// read-only, touches every page, prints "ready", and keeps the mapping
// until its standard input is closed. It uses the standard library only,
// so it builds in an empty module.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: maphelper LIBRARY")
		os.Exit(2)
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
	f.Close()
	var sum byte
	for i := 0; i < len(b); i += 4096 {
		sum += b[i]
	}
	fmt.Printf("ready %d\n", sum)
	io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(b)
}
