package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Size suffixes are binary: K = 1024 bytes.
var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10,
	"M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20,
	"G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
	"T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40,
	"P": 1 << 50, "PB": 1 << 50, "PIB": 1 << 50,
}

const sizeSyntax = "want a number of bytes with an optional K, M, G or T suffix (powers of 1024), e.g. 64G"

// parseSize parses a byte count such as "4096", "512K", "1.5G" or "64GiB".
// The result is positive.
func parseSize(s string) (int64, error) {
	num, unit := splitNumber(s)
	if num == "" {
		return 0, errors.New("not a size: " + sizeSyntax)
	}
	mult, ok := sizeUnits[strings.ToUpper(unit)]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q: %s", unit, sizeSyntax)
	}
	var n int64
	if strings.Contains(num, ".") {
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, errors.New("not a size: " + sizeSyntax)
		}
		v := f * float64(mult)
		if v >= math.MaxInt64 {
			return 0, errors.New("too large")
		}
		n = int64(v)
	} else {
		i, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return 0, errors.New("too large")
			}
			return 0, errors.New("not a size: " + sizeSyntax)
		}
		if i > math.MaxInt64/mult {
			return 0, errors.New("too large")
		}
		n = i * mult
	}
	if n <= 0 {
		return 0, errors.New("must be greater than zero")
	}
	return n, nil
}

// splitNumber splits "1.5G" into "1.5" and "G". A sign or a second dot makes
// the number part empty.
func splitNumber(s string) (num, unit string) {
	i := 0
	dots := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		if s[i] == '.' {
			dots++
		}
		i++
	}
	if i == 0 || dots > 1 || s[:i] == "." {
		return "", ""
	}
	return s[:i], s[i:]
}

// parseCacheSize parses a cache size: a byte count as parseSize, or a
// percentage of ram such as "25%". The result is rounded down to whole 4 KiB
// blocks.
func parseCacheSize(s string, ram int64) (int64, error) {
	var n int64
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || math.IsNaN(p) || math.IsInf(p, 0) {
			return 0, errors.New("not a percentage: want e.g. 25% of physical memory")
		}
		if p <= 0 || p > 100 {
			return 0, fmt.Errorf("percentage must be above 0%% and at most 100%% of physical memory")
		}
		n = int64(float64(ram) * p / 100)
	} else {
		var err error
		if n, err = parseSize(s); err != nil {
			if strings.HasPrefix(err.Error(), "not a size") {
				return 0, errors.New("not a size: " + sizeSyntax + ", or a percentage of physical memory, e.g. 25%")
			}
			return 0, err
		}
	}
	n &^= 4095
	if n <= 0 {
		return 0, errors.New("smaller than one 4 KiB block")
	}
	return n, nil
}

// physicalMemory returns the machine's RAM in bytes.
func physicalMemory() (int64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return int64(si.Totalram) * int64(si.Unit), nil
}

// formatBytes renders n in binary units with three significant digits:
// "512 B", "4.0 KiB", "1.50 GiB".
func formatBytes(n int64) string {
	if n < 0 {
		return "-" + formatBytes(-n)
	}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / 1024
	u := 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, units[u])
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, units[u])
	default:
		return fmt.Sprintf("%.2f %s", v, units[u])
	}
}
