package meta

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	s := Super{Version: FormatVersion, BlockSize: 4096, DeviceBlocks: 1 << 20, NextIno: 7, NextGen: 9}
	if got, err := DecodeSuper(s.Encode()); err != nil || got != s {
		t.Fatalf("super: %+v %v", got, err)
	}
	in := Inode{Gen: 3, Mode: 0o100644, Nlink: 2, Uid: 1, Gid: 2, Size: 12345, Blocks: 4, Parent: 1, Atime: -5, Mtime: 6, Ctime: 7, Btime: 8}
	if got, err := DecodeInode(42, in.Encode(42)); err != nil || got != in {
		t.Fatalf("inode: %+v %v", got, err)
	}
	// Flags are an optional trailing word: records without them keep the
	// old length, so existing images read the same.
	plain := len(in.Encode(42))
	in.Flags = InodeImmutable | InodeAppend
	if v := in.Encode(42); len(v) != plain+4 {
		t.Fatalf("inode with flags encodes to %d bytes, want %d", len(v), plain+4)
	} else if got, err := DecodeInode(42, v); err != nil || got != in {
		t.Fatalf("inode with flags: %+v %v", got, err)
	}
	in.Flags = 0x40 // a flag this build does not know: refused, not ignored
	if _, err := DecodeInode(42, in.Encode(42)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown inode flag decoded: %v", err)
	}
	k := ExtentKey(5, 10)
	e := Extent{Pblk: 100, Len: 8, Flags: ExtentUnwritten}
	if got, err := DecodeExtent(k, e.Encode(k)); err != nil || got != e {
		t.Fatalf("extent: %+v %v", got, err)
	}
	dk := DirentKey(1, "hello")
	d := Dirent{Ino: 9, Type: 0o040000}
	if got, err := DecodeDirent(dk, d.Encode(dk)); err != nil || got != d {
		t.Fatalf("dirent: %+v %v", got, err)
	}
	if p, n, err := ParseKeyName(PrefixDirent, dk); err != nil || p != 1 || n != "hello" {
		t.Fatalf("dirent key: %d %q %v", p, n, err)
	}
	xk := XattrKey(3, "user.a")
	if got, err := DecodeBytes(xk, EncodeBytes(xk, []byte("v"))); err != nil || string(got) != "v" {
		t.Fatalf("bytes: %q %v", got, err)
	}
}

// A record copied under another key, or with one flipped bit, must not decode.
func TestCorruptionDetected(t *testing.T) {
	in := Inode{Gen: 1, Mode: 0o100644, Nlink: 1}
	val := in.Encode(1)
	if _, err := DecodeInode(2, val); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record under another key decoded: %v", err)
	}
	for i := range val {
		for bit := 0; bit < 8; bit++ {
			v := bytes.Clone(val)
			v[i] ^= 1 << bit
			if _, err := DecodeInode(1, v); err == nil {
				t.Fatalf("flip of byte %d bit %d not detected", i, bit)
			}
		}
	}
	if _, err := DecodeInode(1, val[:len(val)-1]); err == nil {
		t.Fatal("truncated record decoded")
	}
}

func TestPrefixEnd(t *testing.T) {
	if got := PrefixEnd([]byte{1, 0xff}); !bytes.Equal(got, []byte{2}) {
		t.Fatalf("got %x", got)
	}
	if got := PrefixEnd([]byte{0xff}); got != nil {
		t.Fatalf("got %x", got)
	}
}

func FuzzDecodeSuper(f *testing.F) {
	s := Super{Version: 1, BlockSize: 4096, DeviceBlocks: 10, NextIno: 2, NextGen: 2}
	f.Add(s.Encode())
	f.Fuzz(func(t *testing.T, val []byte) {
		if s, err := DecodeSuper(val); err == nil {
			if !bytes.Equal(s.Encode(), val) {
				t.Fatal("decoded superblock does not re-encode to its input")
			}
		}
	})
}

func FuzzDecodeInode(f *testing.F) {
	in := Inode{Gen: 1, Mode: 0o100644, Nlink: 1, Size: 10}
	f.Add(uint64(1), in.Encode(1))
	f.Fuzz(func(t *testing.T, ino uint64, val []byte) {
		if in, err := DecodeInode(ino, val); err == nil {
			if !bytes.Equal(in.Encode(ino), val) {
				t.Fatal("decoded inode does not re-encode to its input")
			}
		}
	})
}

func FuzzDecodeRecords(f *testing.F) {
	k := ExtentKey(1, 2)
	e := Extent{Pblk: 1, Len: 2}
	f.Add(k, e.Encode(k))
	r := Run{Len: 3, Count: 2}
	rk := RefcountKey(4)
	f.Add(rk, r.Encode(rk))
	dk := DirentKey(1, "x")
	d := Dirent{Ino: 2, Type: 0o100000}
	f.Add(dk, d.Encode(dk))
	ck := ChecksumKey(3)
	cg := ChecksumGroup{Present: 5}
	cg.CRC[0], cg.CRC[2] = 7, 9
	f.Add(ck, cg.Encode(ck))
	f.Fuzz(func(t *testing.T, key, val []byte) {
		if e, err := DecodeExtent(key, val); err == nil && !bytes.Equal(e.Encode(key), val) {
			t.Fatal("extent does not re-encode")
		}
		if r, err := DecodeRun(key, val); err == nil && !bytes.Equal(r.Encode(key), val) {
			t.Fatal("run does not re-encode")
		}
		if d, err := DecodeDirent(key, val); err == nil && !bytes.Equal(d.Encode(key), val) {
			t.Fatal("dirent does not re-encode")
		}
		if v, err := DecodeU32(key, val); err == nil && !bytes.Equal(EncodeU32(key, v), val) {
			t.Fatal("u32 does not re-encode")
		}
		if g, err := DecodeChecksumGroup(key, val); err == nil && !bytes.Equal(g.Encode(key), val) {
			t.Fatal("checksum group does not re-encode")
		}
		if b, err := DecodeBytes(key, val); err == nil && !bytes.Equal(EncodeBytes(key, b), val) {
			t.Fatal("bytes do not re-encode")
		}
		ParseKey1(PrefixFree, key)
		ParseKey2(PrefixExtent, key)
		ParseKeyName(PrefixXattr, key)
	})
}
