package cache

// chunkIndex is a shard's index, block → frame, kept per chunk: a chunk is
// the 1<<shift consecutive blocks key<<shift ... key<<shift + (1<<shift - 1),
// and its frame ids sit side by side in slots, so a run of blocks costs one
// map lookup per chunk, not one per block.
//
// Chunk numbers index slots and counts. A chunk is in the map exactly while
// it holds at least one frame; an emptied chunk's number goes to unused and
// is handed out again, so the index never holds more chunks than the shard
// has indexed frames, whatever range of blocks it has seen.
//
// All methods are called with the shard's lock held.
type chunkIndex struct {
	shift  uint
	chunks map[uint64]int32 // chunk key (block >> shift) → chunk number
	slots  []int32          // chunk c's frame ids at [c<<shift, (c+1)<<shift); -1 = none
	counts []int32          // frames indexed in each chunk; 0 for unused numbers
	unused []int32          // chunk numbers free for reuse; their slots are all -1

	// The chunk found last, so that block-by-block callers walking one
	// chunk skip the map: last < 0 means none.
	lastKey uint64
	last    int32
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

// slotsOf returns chunk c's slots, one per block of the chunk.
func (x *chunkIndex) slotsOf(c int32) []int32 {
	lo := int(c) << x.shift
	return x.slots[lo : lo+1<<x.shift : lo+1<<x.shift]
}

func (x *chunkIndex) slotOf(block uint64) int { return int(block & (1<<x.shift - 1)) }

// lookup returns the id of block's indexed frame, or -1.
func (x *chunkIndex) lookup(block uint64) int32 {
	c := x.find(block >> x.shift)
	if c < 0 {
		return -1
	}
	return x.slots[int(c)<<x.shift+x.slotOf(block)]
}

// insert indexes frame id as block's frame; the block must have none.
func (x *chunkIndex) insert(block uint64, id int32) {
	key := block >> x.shift
	c := x.find(key)
	if c < 0 {
		c = x.newChunk(key)
	}
	p := int(c)<<x.shift + x.slotOf(block)
	if x.slots[p] >= 0 {
		panic("cache: block indexed twice")
	}
	x.slots[p] = id
	x.counts[c]++
}

// remove drops block's frame from the index, and the chunk with its last frame.
func (x *chunkIndex) remove(block uint64) {
	key := block >> x.shift
	c := x.find(key)
	if c < 0 || x.slots[int(c)<<x.shift+x.slotOf(block)] < 0 {
		panic("cache: removing a block that is not indexed")
	}
	x.slots[int(c)<<x.shift+x.slotOf(block)] = -1
	if x.counts[c]--; x.counts[c] > 0 {
		return
	}
	delete(x.chunks, key)
	x.unused = append(x.unused, c)
	if x.last == c {
		x.last = -1
	}
}

// newChunk maps key to an empty chunk, reusing an unused number if any.
func (x *chunkIndex) newChunk(key uint64) int32 {
	var c int32
	if n := len(x.unused); n > 0 {
		c = x.unused[n-1]
		x.unused = x.unused[:n-1]
	} else {
		c = int32(len(x.counts))
		x.counts = append(x.counts, 0)
		for range 1 << x.shift {
			x.slots = append(x.slots, -1)
		}
	}
	x.chunks[key] = c
	x.lastKey, x.last = key, c
	return c
}
