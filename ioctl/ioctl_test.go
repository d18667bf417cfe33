package ioctl

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

func TestLayoutMatchesSizes(t *testing.T) {
	cases := []struct {
		name      string
		goSize    uintptr
		abiSize   uint32
		cmd       uint32
		wantCmd   uint32
		wireBytes int
	}{
		{"CloneArgs", unsafe.Sizeof(CloneArgs{}), SizeCloneArgs, IocClone, 0x40085240, len(Encode(&CloneArgs{}))},
		{"CloneRangeArgs", unsafe.Sizeof(CloneRangeArgs{}), SizeCloneRangeArgs, IocCloneRange, 0x40205241, len(Encode(&CloneRangeArgs{}))},
		{"DedupeRangeArgs", unsafe.Sizeof(DedupeRangeArgs{}), SizeDedupeRangeArgs, IocDedupeRange, 0xc0305242, len(Encode(&DedupeRangeArgs{}))},
		{"UnshareArgs", unsafe.Sizeof(UnshareArgs{}), SizeUnshareArgs, IocUnshare, 0x40105243, len(Encode(&UnshareArgs{}))},
		{"FiemapArgs", unsafe.Sizeof(FiemapArgs{}), SizeFiemapArgs, IocFiemap, 0xc4205244, len(Encode(&FiemapArgs{}))},
		{"CloneTreeArgs", unsafe.Sizeof(CloneTreeArgs{}), SizeCloneTreeArgs, IocCloneTree, 0x41085245, len(Encode(&CloneTreeArgs{}))},
	}
	for _, c := range cases {
		if c.goSize != uintptr(c.abiSize) || c.wireBytes != int(c.abiSize) {
			t.Errorf("%s: Go size %d, wire size %d, ABI size %d", c.name, c.goSize, c.wireBytes, c.abiSize)
		}
		if SizeOf(c.cmd) != c.abiSize {
			t.Errorf("%s: size in number %#x is %d, want %d", c.name, c.cmd, SizeOf(c.cmd), c.abiSize)
		}
		if c.cmd != c.wantCmd {
			t.Errorf("%s: number %#x, want %#x (docs/ioctl.md)", c.name, c.cmd, c.wantCmd)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	in := DedupeRangeArgs{SrcFd: 7, SrcOffset: 4096, Length: 1 << 20, DstOffset: 8192, BytesDeduped: 5, Status: DedupeDiffers}
	var out DedupeRangeArgs
	if err := Decode(Encode(&in), &out); err != nil {
		t.Fatal(err)
	}
	if in != out {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	fm := FiemapArgs{Start: 1, Next: 2, Count: 1, Flags: FiemapLast}
	fm.Extents[31] = FiemapExtent{Logical: 3, Physical: 4, Length: 5, Flags: ExtentShared}
	var fm2 FiemapArgs
	if err := Decode(Encode(&fm), &fm2); err != nil {
		t.Fatal(err)
	}
	if fm != fm2 {
		t.Fatal("fiemap round trip differs")
	}
	if err := Decode(make([]byte, 10), &out); err == nil {
		t.Fatal("decode of a short buffer succeeded")
	}
}

func TestCloneTreeName(t *testing.T) {
	var a CloneTreeArgs
	long := strings.Repeat("n", 255)
	for _, name := range []string{"rootfs-2", long, "with space", "ünïcode"} {
		a.Name = [CloneTreeNameSize]byte{0: 'x', 200: 'y'} // old contents must not leak
		if err := a.SetName(name); err != nil {
			t.Fatalf("SetName(%q): %v", name, err)
		}
		var b CloneTreeArgs
		if err := Decode(Encode(&a), &b); err != nil {
			t.Fatal(err)
		}
		if got, err := b.EntryName(); got != name || err != nil {
			t.Errorf("EntryName after SetName(%q) = %q, %v", name, got, err)
		}
	}
	for name, want := range map[string]error{
		"": syscall.EINVAL, ".": syscall.EINVAL, "..": syscall.EINVAL, "a/b": syscall.EINVAL,
		"nul\x00in": syscall.EINVAL, long + "n": syscall.ENAMETOOLONG,
	} {
		if err := a.SetName(name); !errors.Is(err, want) {
			t.Errorf("SetName(%q) = %v, want %v", name, err, want)
		}
	}
	// A name filling all 256 bytes has no terminator.
	for i := range a.Name {
		a.Name[i] = 'z'
	}
	if _, err := a.EntryName(); !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("unterminated name: %v, want ENAMETOOLONG", err)
	}
	copy(a.Name[:], "../x\x00")
	if _, err := a.EntryName(); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("name with a slash: %v, want EINVAL", err)
	}
}
