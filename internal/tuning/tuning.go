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
