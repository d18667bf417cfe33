package meta

import (
	"encoding/binary"
	"fmt"
)

// Super is the superblock: format identity and allocation counters.
type Super struct {
	Version      uint32
	BlockSize    uint32
	DeviceBlocks uint64 // size of the data device in blocks
	NextIno      uint64 // inode numbers are never reused
	NextGen      uint64 // generation given to the next inode
	// CommitSeq numbers commits: the store holds commit CommitSeq. The data
	// device's label records the last one made durable, so a store that
	// lost commits (a damaged write-ahead log) is noticed.
	CommitSeq uint64
}

func (s *Super) Encode() []byte {
	b := make([]byte, 0, 48)
	b = binary.BigEndian.AppendUint64(b, Magic)
	b = binary.BigEndian.AppendUint32(b, s.Version)
	b = binary.BigEndian.AppendUint32(b, s.BlockSize)
	b = binary.BigEndian.AppendUint64(b, s.DeviceBlocks)
	b = binary.BigEndian.AppendUint64(b, s.NextIno)
	b = binary.BigEndian.AppendUint64(b, s.NextGen)
	b = binary.BigEndian.AppendUint64(b, s.CommitSeq)
	return seal(SuperKey(), b)
}

func DecodeSuper(val []byte) (Super, error) {
	key := SuperKey()
	p, err := open(key, val)
	if err != nil {
		return Super{}, err
	}
	r := reader{b: p}
	magic := r.u64()
	s := Super{Version: r.u32(), BlockSize: r.u32(), DeviceBlocks: r.u64(), NextIno: r.u64(), NextGen: r.u64(), CommitSeq: r.u64()}
	if err := r.done(key, "superblock"); err != nil {
		return Super{}, err
	}
	if magic != Magic {
		return Super{}, corrupt(key, "bad superblock magic %x", magic)
	}
	return s, nil
}

// Inode is an inode record. Times are Unix nanoseconds.
type Inode struct {
	Gen    uint64
	Mode   uint32 // Linux mode: S_IFMT type and permission bits
	Nlink  uint32
	Uid    uint32
	Gid    uint32
	Rdev   uint32
	Size   int64
	Blocks uint64 // blocks mapped by the extent map (shared ones included)
	Parent uint64 // for directories: the parent directory (root: itself)
	Atime  int64
	Mtime  int64
	Ctime  int64
	Btime  int64
	Flags  uint32 // InodeImmutable, InodeAppend
}

// Inode flags: the values of Linux's FS_IMMUTABLE_FL and FS_APPEND_FL.
const (
	InodeImmutable = 0x10
	InodeAppend    = 0x20
)

const inodeLen = 8 + 5*4 + 8 + 8 + 8 + 4*8

func (in *Inode) Encode(ino uint64) []byte {
	b := make([]byte, 0, inodeLen+8)
	b = binary.BigEndian.AppendUint64(b, in.Gen)
	b = binary.BigEndian.AppendUint32(b, in.Mode)
	b = binary.BigEndian.AppendUint32(b, in.Nlink)
	b = binary.BigEndian.AppendUint32(b, in.Uid)
	b = binary.BigEndian.AppendUint32(b, in.Gid)
	b = binary.BigEndian.AppendUint32(b, in.Rdev)
	b = binary.BigEndian.AppendUint64(b, uint64(in.Size))
	b = binary.BigEndian.AppendUint64(b, in.Blocks)
	b = binary.BigEndian.AppendUint64(b, in.Parent)
	for _, t := range [...]int64{in.Atime, in.Mtime, in.Ctime, in.Btime} {
		b = binary.BigEndian.AppendUint64(b, uint64(t))
	}
	// The flags word is written only when set: records without flags keep
	// their old encoding, and a build that predates flags refuses an
	// immutable inode (wrong length) rather than ignoring its flags.
	if in.Flags != 0 {
		b = binary.BigEndian.AppendUint32(b, in.Flags)
	}
	return seal(InodeKey(ino), b)
}

func DecodeInode(ino uint64, val []byte) (Inode, error) {
	key := InodeKey(ino)
	p, err := open(key, val)
	if err != nil {
		return Inode{}, err
	}
	r := reader{b: p}
	in := Inode{Gen: r.u64(), Mode: r.u32(), Nlink: r.u32(), Uid: r.u32(), Gid: r.u32(), Rdev: r.u32(),
		Size: int64(r.u64()), Blocks: r.u64(), Parent: r.u64(),
		Atime: int64(r.u64()), Mtime: int64(r.u64()), Ctime: int64(r.u64()), Btime: int64(r.u64())}
	if len(r.b) == 4 {
		in.Flags = r.u32()
		if in.Flags == 0 {
			return Inode{}, corrupt(key, "inode flags word present but zero")
		}
	}
	if err := r.done(key, "inode"); err != nil {
		return Inode{}, err
	}
	if in.Flags&^(InodeImmutable|InodeAppend) != 0 {
		return Inode{}, corrupt(key, "unknown inode flags %#x", in.Flags)
	}
	if in.Size < 0 {
		return Inode{}, corrupt(key, "negative size %d", in.Size)
	}
	return in, nil
}

// Dirent is a directory entry's value.
type Dirent struct {
	Ino  uint64
	Type uint32 // S_IFMT bits of the child
}

func (d *Dirent) Encode(key []byte) []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, d.Ino)
	b = binary.BigEndian.AppendUint32(b, d.Type)
	return seal(key, b)
}

func DecodeDirent(key, val []byte) (Dirent, error) {
	p, err := open(key, val)
	if err != nil {
		return Dirent{}, err
	}
	r := reader{b: p}
	d := Dirent{Ino: r.u64(), Type: r.u32()}
	return d, r.done(key, "dirent")
}

// Extent flags.
const ExtentUnwritten = 1 << 0

// Extent maps Len blocks starting at the file block in its key to the
// physical blocks starting at Pblk.
type Extent struct {
	Pblk  uint64
	Len   uint64
	Flags uint8
}

func (e *Extent) Encode(key []byte) []byte {
	b := make([]byte, 0, 21)
	b = binary.BigEndian.AppendUint64(b, e.Pblk)
	b = binary.BigEndian.AppendUint64(b, e.Len)
	b = append(b, e.Flags)
	return seal(key, b)
}

func DecodeExtent(key, val []byte) (Extent, error) {
	p, err := open(key, val)
	if err != nil {
		return Extent{}, err
	}
	r := reader{b: p}
	e := Extent{Pblk: r.u64(), Len: r.u64(), Flags: r.u8()}
	if err := r.done(key, "extent"); err != nil {
		return Extent{}, err
	}
	if e.Len == 0 || e.Pblk+e.Len < e.Pblk || e.Flags&^ExtentUnwritten != 0 {
		return Extent{}, corrupt(key, "invalid extent %+v", e)
	}
	return e, nil
}

// Run is a physical run: Len blocks from the block in its key. It is the
// value of refcount records (with Count >= 2) and free records (Count 0).
type Run struct {
	Len   uint64
	Count uint32
}

func (r *Run) Encode(key []byte) []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, r.Len)
	b = binary.BigEndian.AppendUint32(b, r.Count)
	return seal(key, b)
}

func DecodeRun(key, val []byte) (Run, error) {
	p, err := open(key, val)
	if err != nil {
		return Run{}, err
	}
	rd := reader{b: p}
	r := Run{Len: rd.u64(), Count: rd.u32()}
	if err := rd.done(key, "run"); err != nil {
		return Run{}, err
	}
	if r.Len == 0 {
		return Run{}, corrupt(key, "empty run")
	}
	return r, nil
}

// ChecksumGroup holds the CRC32C of up to GroupBlocks consecutive physical
// blocks: those of group g are blocks [g*GroupBlocks, (g+1)*GroupBlocks).
// Present has bit i set when block g*GroupBlocks+i has a checksum.
type ChecksumGroup struct {
	Present uint64
	CRC     [GroupBlocks]uint32
}

// GroupBlocks is the number of blocks per checksum record.
const GroupBlocks = 64

func (g *ChecksumGroup) Encode(key []byte) []byte {
	b := make([]byte, 0, 8+4*GroupBlocks+4)
	b = binary.BigEndian.AppendUint64(b, g.Present)
	for _, c := range g.CRC {
		b = binary.BigEndian.AppendUint32(b, c)
	}
	return seal(key, b)
}

func DecodeChecksumGroup(key, val []byte) (ChecksumGroup, error) {
	p, err := open(key, val)
	if err != nil {
		return ChecksumGroup{}, err
	}
	r := reader{b: p}
	g := ChecksumGroup{Present: r.u64()}
	for i := range g.CRC {
		g.CRC[i] = r.u32()
	}
	return g, r.done(key, "checksum group")
}

// EncodeU32 / DecodeU32 encode a single u32 value.
func EncodeU32(key []byte, v uint32) []byte {
	return seal(key, binary.BigEndian.AppendUint32(nil, v))
}

func DecodeU32(key, val []byte) (uint32, error) {
	p, err := open(key, val)
	if err != nil {
		return 0, err
	}
	r := reader{b: p}
	v := r.u32()
	return v, r.done(key, "u32")
}

// EncodeBytes / DecodeBytes encode an opaque value (xattr value, symlink
// target, orphan marker).
func EncodeBytes(key, v []byte) []byte {
	return seal(key, append(make([]byte, 0, len(v)+4), v...))
}

func DecodeBytes(key, val []byte) ([]byte, error) {
	p, err := open(key, val)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), p...), nil
}

// Device label: block 0 of the data device, reserved, written in every
// commit's data flush with the sequence number of the last durable commit.
const (
	LabelBlock = 0
	labelMagic = 0x52464c4b4c41424c // "RFLKLABL"
)

// EncodeLabel fills block (4096 bytes) with the label for commit seq.
func EncodeLabel(block []byte, seq uint64) {
	clear(block)
	binary.BigEndian.PutUint64(block[0:], labelMagic)
	binary.BigEndian.PutUint64(block[8:], seq)
	binary.BigEndian.PutUint32(block[16:], Checksum(block[:16]))
}

// DecodeLabel returns the commit sequence recorded in a label block; ok is
// false for a block that holds no label (a new image) and err is set for a
// damaged one.
func DecodeLabel(block []byte) (seq uint64, ok bool, err error) {
	if len(block) < 20 {
		return 0, false, fmt.Errorf("%w: label block of %d bytes", ErrCorrupt, len(block))
	}
	if binary.BigEndian.Uint64(block) != labelMagic {
		for _, b := range block {
			if b != 0 {
				return 0, false, fmt.Errorf("%w: device label has no magic", ErrCorrupt)
			}
		}
		return 0, false, nil
	}
	if binary.BigEndian.Uint32(block[16:]) != Checksum(block[:16]) {
		return 0, false, fmt.Errorf("%w: device label checksum mismatch", ErrCorrupt)
	}
	return binary.BigEndian.Uint64(block[8:]), true, nil
}
