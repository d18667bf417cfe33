package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the tick rate of /proc/PID/stat's CPU times (USER_HZ, fixed at
// 100 on Linux whatever the kernel's HZ).
const userHZ = 100

// processCPU returns the user+system CPU time of every thread of pid.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(string(b), userHZ)
}

// processRSS returns VmRSS of pid in bytes.
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseKBField(string(b), "VmRSS")
}

// meminfo returns a field of /proc/meminfo in bytes.
func meminfo(field string) (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return parseKBField(string(b), field)
}

// threadCPU returns the calling OS thread's user+system CPU time (microsecond
// resolution). Callers lock their goroutine to the thread.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// readPIDFile reads a file holding a decimal pid (the image's lock file).
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: no pid in %q", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}
