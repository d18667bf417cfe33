// Package tuning holds the engine's internal thresholds that tests in other
// packages need to lower (to reach a code path with small data), in one
// place. Production code only reads them; they are not options: a user
// never needs to change them.
package tuning

// ReapThreshold: files with more extents than this are freed in the
// background after their last unlink (see the root package's reap.go).
var ReapThreshold = 4096

// ReapChunk is how many extents one background freeing operation releases.
var ReapChunk = 1024

// SetReap sets ReapThreshold and ReapChunk and returns a function that
// restores the previous values. Not safe while an engine is running.
func SetReap(threshold, chunk int) (restore func()) {
	t, c := ReapThreshold, ReapChunk
	ReapThreshold, ReapChunk = threshold, chunk
	return func() { ReapThreshold, ReapChunk = t, c }
}
