// Package testenv decides whether tests that need the machine's FUSE can
// run: mount tests need root and /dev/fuse. Where those are missing they
// skip, except under REFLINKFS_REQUIRE_FUSE=1 (CI), where a test that cannot
// run is a failure, so a broken CI machine cannot pass by skipping.
package testenv

import (
	"os"
	"testing"
)

// FUSERequired reports whether a missing FUSE (or tool) must fail tests.
func FUSERequired() bool { return os.Getenv("REFLINKFS_REQUIRE_FUSE") == "1" }

// SkipOrFail skips t, or fails it when FUSE tests are required.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if FUSERequired() {
		t.Fatalf(format+" (REFLINKFS_REQUIRE_FUSE=1)", args...)
	}
	t.Skipf(format+" (set REFLINKFS_REQUIRE_FUSE=1 to make this a failure)", args...)
}

// RequireFUSE skips or fails t unless it runs as root with /dev/fuse.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "mount tests need root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		SkipOrFail(t, "mount tests need /dev/fuse: %v", err)
	}
}
