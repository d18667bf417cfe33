// Package tuning holds the engine's internal thresholds that tests in other
// packages need to lower (to reach a code path with small data), in one
// place. Production code only reads them; they are not options: a user
// never needs to change them.
package tuning

// ReapThreshold: files with more extents than this are freed in the
// background after their last unlink (see the root package's reap.go); at
// about 3 µs per extent, an unlink frees at most ~3 ms worth itself.
var ReapThreshold = 1024

// ReapChunk is how many extents one background freeing operation releases
// (about 3 µs each): small, so an operation waiting behind one (a commit, or
// on 2 CPUs the reply to the unlink that queued the file) waits under a
// millisecond.
var ReapChunk = 256

// SetReap sets ReapThreshold and ReapChunk and returns a function that
// restores the previous values. Not safe while an engine is running.
func SetReap(threshold, chunk int) (restore func()) {
	t, c := ReapThreshold, ReapChunk
	ReapThreshold, ReapChunk = threshold, chunk
	return func() { ReapThreshold, ReapChunk = t, c }
}

// PassthroughMaxExtents: files with more extents than this are not passed
// through (FUSE passthrough needs a snapshot of the file, a clone that
// costs about 5 µs per extent under the engine's lock: 1024 extents is
// about 5 ms). Until clones are O(1), fragmented files are read through the
// daemon's shared block cache instead.
var PassthroughMaxExtents = 1024
