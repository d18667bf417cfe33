package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"unsafe"
)

func TestEnvCloseRunsCleanupsInReverseOnce(t *testing.T) {
	e := &Env{log: newProgress(io.Discard)}
	var order []string
	for _, name := range []string{"a", "b", "c"} {
		e.onClose(name, func(ctx context.Context) error {
			if ctx.Err() != nil {
				t.Errorf("%s: teardown got a cancelled context", name)
			}
			order = append(order, name)
			if name == "b" {
				return errors.New("b failed")
			}
			return nil
		})
	}
	err := e.Close()
	if strings.Join(order, "") != "cba" {
		t.Fatalf("order %v", order)
	}
	if err == nil || !strings.Contains(err.Error(), "b failed") {
		t.Fatalf("error %v", err)
	}
	if err := e.Close(); err != nil || len(order) != 3 {
		t.Fatalf("second Close ran again: %v %v", order, err)
	}
}

func TestRunCmd(t *testing.T) {
	out, err := runCmd(context.Background(), "sh", "-c", "echo out; echo oops >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "oops") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("error %v", err)
	}
	if out != "out\n" {
		t.Fatalf("stdout %q", out)
	}
	if out, err := runCmd(context.Background(), "echo", "hi"); err != nil || out != "hi\n" {
		t.Fatalf("%q %v", out, err)
	}
}

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b)
	p.Printf("[%s] %d", "x", 3)
	if !regexp.MustCompile(`^bench \[00:00:00\] \[x\] 3\n$`).MatchString(b.String()) {
		t.Fatalf("got %q", b.String())
	}
}

func TestXFSIoctlNumber(t *testing.T) {
	// _IOR('X', 58, struct xfs_fs_eofblocks), a 128-byte structure.
	if unsafe.Sizeof(xfsEOFBlocks{}) != 128 {
		t.Fatalf("struct size %d", unsafe.Sizeof(xfsEOFBlocks{}))
	}
	if xfsIocFreeEOFBlocks != 0x8080583a {
		t.Fatalf("ioctl number %#x", xfsIocFreeEOFBlocks)
	}
}
