package fusefs

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const cloneFileSize = 64 << 20

// cp inside the mount reflinks through copy_file_range: eight copies of a
// 64 MiB file add almost nothing to used space, reading all of them caches
// about one file's worth in the engine and one in the kernel's page cache
// (the passthrough backing file the copies share; no file has pages of its
// own), and writes to one copy (write(2) and mmap) leave every other copy
// unchanged.
func TestCpReflinksShareSpaceAndCache(t *testing.T) {
	requireTool(t, "python3")
	m := mountFresh(t)

	src := m.path("orig")
	writeFile(t, src, pattern(7, cloneFileSize))
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	used0 := m.fsys.Stats().UsedBytes
	dfUsed0 := dfUsedBytes(t, m.dir)
	if used0 < cloneFileSize {
		t.Fatalf("used bytes %d after writing %d", used0, cloneFileSize)
	}

	copies := []string{src}
	for i := 0; i < 8; i++ {
		c := m.path(fmt.Sprintf("copy%d", i))
		run(t, "cp", src, c)
		copies = append(copies, c)
	}
	if err := m.fsys.Sync(); err != nil {
		t.Fatal(err)
	}
	const slack = 1 << 20
	if grew := m.fsys.Stats().UsedBytes - used0; grew > slack {
		t.Errorf("8 copies of %d bytes grew used space by %d bytes", cloneFileSize, grew)
	}
	if grew := dfUsedBytes(t, m.dir) - dfUsed0; grew > slack {
		t.Errorf("8 copies grew df's used space by %d bytes", grew)
	}

	want := sha(t, src)
	sh(t, "sync; echo 3 > /proc/sys/vm/drop_caches")
	// Hold every copy open while they are read and counted: a backing lives
	// only while a passthrough open uses it, and RELEASE reaches the daemon
	// asynchronously after close(2), so without these opens the count below
	// would race the releases of the readers.
	var held []*os.File
	for _, c := range copies {
		f, err := os.Open(c)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, f)
	}
	for _, c := range copies {
		sh(t, "cat "+c+" > /dev/null")
	}
	cached := m.fsys.Stats().CachedBytes
	if cached > cloneFileSize*21/20 || cached < cloneFileSize/2 {
		t.Errorf("after reading %d copies: engine cache holds %d bytes, want about one file (%d)", len(copies), cached, cloneFileSize)
	}
	for _, c := range copies {
		if own := ownPageCache(t, c); own != 0 {
			t.Errorf("%s: %d bytes in its own page cache, want 0", c, own)
		}
	}
	if p := m.srv.Passthrough(); p.CachedBytes > cloneFileSize*21/20 || p.Backings != 1 {
		t.Errorf("after reading %d copies: %d backing files holding %d bytes of page cache, want 1 holding about one file (%d)",
			len(copies), p.Backings, p.CachedBytes, cloneFileSize)
	}
	for _, f := range held {
		f.Close()
	}
	for _, c := range copies {
		if got := sha(t, c); got != want {
			t.Fatalf("%s differs from the original", c)
		}
	}

	// write(2) into copy0 without truncating, mmap write into copy1.
	run(t, "dd", "if=/dev/urandom", "of="+copies[1], "bs=4096", "seek=100", "count=3", "conv=notrunc", "status=none")
	mmapWrite(t, copies[2], 5<<20+17, []byte("written through a shared mapping"))
	for i, c := range copies {
		got := sha(t, c)
		switch i {
		case 1, 2:
			if got == want {
				t.Errorf("%s unchanged after writing to it", c)
			}
		default:
			if got != want {
				t.Errorf("%s changed by writes to other copies", c)
			}
		}
	}
	if b := readFile(t, copies[2]); string(b[5<<20+17:5<<20+17+32]) != "written through a shared mapping" {
		t.Errorf("mmap write not visible through read")
	}
	if fi, err := os.Stat(copies[1]); err != nil || fi.Size() != cloneFileSize {
		t.Errorf("dd conv=notrunc changed the size: %v %v", fi.Size(), err)
	}

	m.remount(t)
	for i, c := range copies {
		got := sha(t, c)
		if (i == 1 || i == 2) == (got == want) {
			t.Errorf("after remount %s has the wrong content", c)
		}
	}
}

// mmapWrite writes data at off through a MAP_SHARED mapping and msyncs it,
// in a separate process (python3) as a user program would.
func mmapWrite(t testing.TB, path string, off int, data []byte) {
	t.Helper()
	script := fmt.Sprintf(`
import mmap, os
fd = os.open(%q, os.O_RDWR)
size = os.fstat(fd).st_size
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[%d:%d] = bytes.fromhex(%q)
m.flush()
m.close()
os.close(fd)
`, path, off, off+len(data), hex.EncodeToString(data))
	run(t, "python3", "-c", script)
}

func dfUsedBytes(t testing.TB, dir string) int64 {
	t.Helper()
	out := run(t, "df", "-B1", "--output=used", dir)
	fields := strings.Fields(out)
	n, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	if err != nil {
		t.Fatalf("df output %q: %v", out, err)
	}
	return n
}

// ownPageCache returns the bytes in a file's own (FUSE inode) page cache:
// cachestat(2) of an open descriptor, which, unlike fincore's mapping,
// does not see a passthrough backing file's pages.
func ownPageCache(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &cs, 0); err != nil {
		t.Fatalf("cachestat %s: %v", path, err)
	}
	return int64(cs.Cache) * int64(os.Getpagesize())
}
