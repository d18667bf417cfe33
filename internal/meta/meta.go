// Package meta defines the on-disk metadata of a reflinkfs image: the key
// layout in the ordered key-value store and the encoding of every record.
//
// Every value ends with a CRC32C over the key and the payload, so a record
// that was damaged, truncated, or moved to another key fails to decode
// instead of being trusted. Decoders never panic on any input (fuzzed).
//
// Key layout (all integers big-endian so byte order is numeric order):
//
//	"S"                         superblock
//	'I' ino                     inode
//	'D' parent name             directory entry
//	'E' ino lblk                extent: file block lblk maps to a physical run
//	'R' pblk                    reference count of a physical run whose count is >= 2
//	                            (a mapped block without a record has count 1)
//	'F' pblk                    free physical run
//	'C' pblk/64                 CRC32C of the data of written blocks, 64 per record
//	                            (may outlive a block's free; rewritten before reuse)
//	'X' ino name                extended attribute
//	'L' ino                     symlink target
//	'O' ino                     orphan: unlinked inode still open, freed at close or next open
package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// FormatVersion is the version of the on-disk format written by this code.
const FormatVersion = 1

// Magic identifies a reflinkfs superblock.
const Magic = 0x52464c4b46530001 // "RFLKFS" + format family

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is CRC32C of b, the checksum used for data blocks and records.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt metadata record")

func corrupt(key []byte, format string, args ...any) error {
	return fmt.Errorf("%w: key %x: %s", ErrCorrupt, key, fmt.Sprintf(format, args...))
}

// Key prefixes.
const (
	PrefixSuper    = 'S'
	PrefixInode    = 'I'
	PrefixDirent   = 'D'
	PrefixExtent   = 'E'
	PrefixRefcount = 'R'
	PrefixFree     = 'F'
	PrefixChecksum = 'C'
	PrefixXattr    = 'X'
	PrefixSymlink  = 'L'
	PrefixOrphan   = 'O'
)

func key1(prefix byte, a uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], a)
	return k
}

func key2(prefix byte, a, b uint64) []byte {
	k := make([]byte, 17)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], a)
	binary.BigEndian.PutUint64(k[9:], b)
	return k
}

func keyName(prefix byte, a uint64, name string) []byte {
	k := make([]byte, 9+len(name))
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], a)
	copy(k[9:], name)
	return k
}

// SuperKey is the key of the superblock.
func SuperKey() []byte { return []byte{PrefixSuper} }

func InodeKey(ino uint64) []byte                  { return key1(PrefixInode, ino) }
func DirentKey(parent uint64, name string) []byte { return keyName(PrefixDirent, parent, name) }
func ExtentKey(ino, lblk uint64) []byte           { return key2(PrefixExtent, ino, lblk) }
func RefcountKey(pblk uint64) []byte              { return key1(PrefixRefcount, pblk) }
func FreeKey(pblk uint64) []byte                  { return key1(PrefixFree, pblk) }

// ChecksumKey is the key of checksum group g (blocks g*GroupBlocks...).
func ChecksumKey(g uint64) []byte             { return key1(PrefixChecksum, g) }
func XattrKey(ino uint64, name string) []byte { return keyName(PrefixXattr, ino, name) }
func SymlinkKey(ino uint64) []byte            { return key1(PrefixSymlink, ino) }
func OrphanKey(ino uint64) []byte             { return key1(PrefixOrphan, ino) }

// PrefixEnd returns the smallest key greater than every key starting with p.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// InodePrefix returns the prefix of keys of kind prefix belonging to ino
// (dirents of a directory, extents or xattrs of a file).
func InodePrefix(prefix byte, ino uint64) []byte { return key1(prefix, ino) }

// ParseKey1 decodes a one-integer key of the given prefix.
func ParseKey1(prefix byte, k []byte) (uint64, error) {
	if len(k) != 9 || k[0] != prefix {
		return 0, corrupt(k, "bad %c key", prefix)
	}
	return binary.BigEndian.Uint64(k[1:]), nil
}

// ParseKey2 decodes a two-integer key of the given prefix.
func ParseKey2(prefix byte, k []byte) (uint64, uint64, error) {
	if len(k) != 17 || k[0] != prefix {
		return 0, 0, corrupt(k, "bad %c key", prefix)
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:]), nil
}

// ParseKeyName decodes an (integer, name) key of the given prefix.
func ParseKeyName(prefix byte, k []byte) (uint64, string, error) {
	if len(k) < 10 || k[0] != prefix {
		return 0, "", corrupt(k, "bad %c key", prefix)
	}
	return binary.BigEndian.Uint64(k[1:9]), string(k[9:]), nil
}

// seal appends the record checksum (over key and payload) to payload.
func seal(key, payload []byte) []byte {
	c := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, payload)
	return binary.BigEndian.AppendUint32(payload, c)
}

// open verifies the record checksum and returns the payload.
func open(key, val []byte) ([]byte, error) {
	if len(val) < 4 {
		return nil, corrupt(key, "record of %d bytes is too short", len(val))
	}
	payload := val[:len(val)-4]
	want := binary.BigEndian.Uint32(val[len(val)-4:])
	got := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, payload)
	if got != want {
		return nil, corrupt(key, "checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	return payload, nil
}

// reader decodes fixed-width fields, remembering the first short read.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.bad = true
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.bad = true
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u8() uint8 {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) done(key []byte, what string) error {
	if r.bad || len(r.b) != 0 {
		return corrupt(key, "%s record has wrong length", what)
	}
	return nil
}
