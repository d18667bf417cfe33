package cache

import "math/bits"

// chunkIndex is a shard's index, block → frame, kept per chunk: a chunk is
// the 1<<shift consecutive blocks from key<<shift, and a run of blocks costs
// one map lookup per chunk, not one per block.
//
// A chunk records which of its blocks have a frame in a bitmap, and their
// frame ids, in block order, packed in a piece of the shard's pool of ids:
// the id of the block in slot s is at rank(s) = the number of bitmap bits
// below s. Pieces hold 1, 2, 4, ... 1<<shift ids; a chunk moves to a piece
// twice the size when it fills its own, and to one half the size when it
// falls to a quarter, so ids cost 4 to 16 bytes per frame however sparsely a
// chunk's blocks are cached; each chunk adds a 16-byte record and its map
// entry (about 5 bytes per frame for dense chunks, 60 for lone blocks).
//
// A chunk is in the map exactly while it holds at least one frame; emptied
// chunks and pieces are reused, so the index is bounded by the shard's frames,
// not by the blocks it has seen: at most one chunk record per frame, and a
// pool no larger than the most it held at once of each piece size, each under
// 4 ids per frame (in practice about one id per frame, as the pieces of one
// size are mostly reused by the next chunks of that size).
//
// All methods are called with the shard's lock held.
type chunkIndex struct {
	shift  uint
	chunks map[uint64]int32           // chunk key (block >> shift) → chunk number
	recs   []chunk                    // by chunk number
	unused []int32                    // chunk numbers free for reuse; their records are zero
	pool   []int32                    // the pieces of frame ids
	free   [maxChunkShift + 1][]int32 // free pieces of each size class, by offset in pool

	// The chunk found last, so that block-by-block callers walking one
	// chunk skip the map: last < 0 means none.
	lastKey uint64
	last    int32
}

type chunk struct {
	bits  uint64 // slot s has a frame if bit s is set
	at    int32  // the frames' ids are pool[at : at+popcount(bits)], of a piece of 1<<class
	class uint8
}

func newChunkIndex(shift uint, frames int32) chunkIndex {
	return chunkIndex{
		shift:  shift,
		chunks: make(map[uint64]int32, max(1, frames>>shift)),
		last:   -1,
	}
}

// find returns the number of the chunk with the given key, or -1.
func (x *chunkIndex) find(key uint64) int32 {
	if x.last >= 0 && x.lastKey == key {
		return x.last
	}
	c, ok := x.chunks[key]
	if !ok {
		return -1
	}
	x.lastKey, x.last = key, c
	return c
}

// members returns chunk c's bitmap and its frame ids, in slot order: the
// frame of slot s is ids[rank(bits, s)].
func (x *chunkIndex) members(c int32) (bits uint64, ids []int32) {
	r := &x.recs[c]
	return r.bits, x.pool[r.at : int(r.at)+popcount(r.bits)]
}

func (x *chunkIndex) slotOf(block uint64) int { return int(block & (1<<x.shift - 1)) }

// rank is the number of frames of a chunk in slots below s.
func rank(b uint64, s int) int { return popcount(b & (1<<s - 1)) }

func popcount(b uint64) int { return bits.OnesCount64(b) }

// lookup returns the id of block's indexed frame, or -1.
func (x *chunkIndex) lookup(block uint64) int32 {
	c := x.find(block >> x.shift)
	if c < 0 {
		return -1
	}
	r := &x.recs[c]
	s := x.slotOf(block)
	if r.bits>>s&1 == 0 {
		return -1
	}
	return x.pool[int(r.at)+rank(r.bits, s)]
}

// insert indexes frame id as block's frame; the block must have none.
func (x *chunkIndex) insert(block uint64, id int32) {
	key := block >> x.shift
	c := x.find(key)
	if c < 0 {
		c = x.newChunk(key)
	}
	r := &x.recs[c]
	s := x.slotOf(block)
	if r.bits>>s&1 != 0 {
		panic("cache: block indexed twice")
	}
	n := popcount(r.bits)
	if n == 1<<r.class {
		x.move(r, r.class+1)
	}
	at, k := int(r.at), rank(r.bits, s)
	copy(x.pool[at+k+1:at+n+1], x.pool[at+k:at+n])
	x.pool[at+k] = id
	r.bits |= 1 << s
}

// remove drops block's frame from the index, and the chunk with its last frame.
func (x *chunkIndex) remove(block uint64) {
	key := block >> x.shift
	c := x.find(key)
	s := x.slotOf(block)
	if c < 0 || x.recs[c].bits>>s&1 == 0 {
		panic("cache: removing a block that is not indexed")
	}
	r := &x.recs[c]
	n, at, k := popcount(r.bits), int(r.at), rank(r.bits, s)
	copy(x.pool[at+k:at+n-1], x.pool[at+k+1:at+n])
	x.pool[at+n-1] = -1
	r.bits &^= 1 << s
	switch n--; {
	case n == 0:
		x.freePiece(r.at, r.class)
		*r = chunk{}
		delete(x.chunks, key)
		x.unused = append(x.unused, c)
		if x.last == c {
			x.last = -1
		}
	case r.class > 0 && n <= 1<<r.class/4:
		x.move(r, r.class-1)
	}
}

// newChunk maps key to an empty chunk, reusing an unused number if any.
func (x *chunkIndex) newChunk(key uint64) int32 {
	var c int32
	if n := len(x.unused); n > 0 {
		c = x.unused[n-1]
		x.unused = x.unused[:n-1]
	} else {
		c = int32(len(x.recs))
		x.recs = append(x.recs, chunk{})
	}
	x.recs[c] = chunk{at: x.allocPiece(0)}
	x.chunks[key] = c
	x.lastKey, x.last = key, c
	return c
}

// move copies r's ids to a new piece of the given class and frees the old one.
func (x *chunkIndex) move(r *chunk, class uint8) {
	at := x.allocPiece(class)
	n := popcount(r.bits)
	copy(x.pool[at:int(at)+n], x.pool[r.at:int(r.at)+n])
	x.freePiece(r.at, r.class)
	r.at, r.class = at, class
}

// allocPiece returns the offset of a piece of 1<<class ids, all -1.
func (x *chunkIndex) allocPiece(class uint8) int32 {
	if free := x.free[class]; len(free) > 0 {
		at := free[len(free)-1]
		x.free[class] = free[:len(free)-1]
		return at
	}
	at := int32(len(x.pool))
	for range 1 << class {
		x.pool = append(x.pool, -1)
	}
	return at
}

func (x *chunkIndex) freePiece(at int32, class uint8) {
	for i := range 1 << class {
		x.pool[int(at)+i] = -1
	}
	x.free[class] = append(x.free[class], at)
}
