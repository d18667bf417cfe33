package device

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"unsafe"
)

const testSize = 8 << 20

// pattern returns n aligned bytes whose content depends on seed.
func pattern(n int, seed byte) []byte {
	b := AlignedBuffer(n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>12)
	}
	return b
}

// split cuts b into aligned pieces of the given block counts (cycled).
func split(b []byte, blocks ...int) [][]byte {
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := min(blocks[i%len(blocks)]*BlockSize, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func readAll(t *testing.T, d Device, off int64, n int) []byte {
	t.Helper()
	b := AlignedBuffer(n)
	for i := range b {
		b[i] = 0xee // must be overwritten
	}
	if err := d.ReadBlocks([][]byte{b}, off); err != nil {
		t.Fatalf("read %d bytes at %d: %v", n, off, err)
	}
	return b
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{0, 1, 4095, 4096, 4097, 1 << 20} {
		b := AlignedBuffer(n)
		want := (n + BlockSize - 1) / BlockSize * BlockSize
		if len(b) != want || cap(b) != want {
			t.Errorf("AlignedBuffer(%d): len %d cap %d, want %d", n, len(b), cap(b), want)
		}
		if len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%BlockSize != 0 {
			t.Errorf("AlignedBuffer(%d) at %p is not aligned", n, &b[0])
		}
		if !isZero(b) {
			t.Errorf("AlignedBuffer(%d) is not zeroed", n)
		}
	}
}

// deviceSemantics checks the Device contract shared by every
// implementation. d must be testSize bytes and all zeros.
func deviceSemantics(t *testing.T, d Device) {
	if d.Size() != testSize {
		t.Fatalf("Size = %d, want %d", d.Size(), testSize)
	}

	t.Run("unwritten reads zeros", func(t *testing.T) {
		if b := readAll(t, d, testSize-8*BlockSize, 8*BlockSize); !isZero(b) {
			t.Error("unwritten blocks are not zero")
		}
	})

	t.Run("vectored round trip", func(t *testing.T) {
		data := pattern(40*BlockSize, 1)
		if err := d.WriteBlocks(split(data, 1, 3, 2), 12*BlockSize); err != nil {
			t.Fatal(err)
		}
		got := AlignedBuffer(len(data))
		if err := d.ReadBlocks(split(got, 5, 1), 12*BlockSize); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("read back differs from what was written")
		}
		// Empty transfers are no-ops.
		if err := d.WriteBlocks(nil, 0); err != nil {
			t.Errorf("empty write: %v", err)
		}
		if err := d.ReadBlocks([][]byte{{}}, testSize); err != nil {
			t.Errorf("empty read at end: %v", err)
		}
	})

	t.Run("more iovecs than IOV_MAX", func(t *testing.T) {
		const n = iovMax + 500
		data := pattern(n*BlockSize, 9)
		if err := d.WriteBlocks(split(data, 1), 0); err != nil {
			t.Fatal(err)
		}
		got := AlignedBuffer(len(data))
		if err := d.ReadBlocks(split(got, 1), 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("read back differs from what was written")
		}
	})

	t.Run("punch reads zeros", func(t *testing.T) {
		off := int64(100 * BlockSize)
		data := pattern(16*BlockSize, 3)
		if err := d.WriteBlocks([][]byte{data}, off); err != nil {
			t.Fatal(err)
		}
		if err := d.Punch(off+4*BlockSize, 8*BlockSize); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, d, off, 16*BlockSize)
		if !bytes.Equal(got[:4*BlockSize], data[:4*BlockSize]) || !bytes.Equal(got[12*BlockSize:], data[12*BlockSize:]) {
			t.Error("punch changed blocks outside its range")
		}
		if !isZero(got[4*BlockSize : 12*BlockSize]) {
			t.Error("punched blocks do not read as zeros")
		}
		if err := d.Punch(off, 0); err != nil {
			t.Errorf("empty punch: %v", err)
		}
		if err := d.Flush(); err != nil {
			t.Errorf("flush: %v", err)
		}
	})

	t.Run("bad arguments", func(t *testing.T) {
		buf := AlignedBuffer(2 * BlockSize)
		misaligned := buf[1 : 1+BlockSize]
		cases := []struct {
			name string
			err  error
			want error
		}{
			{"read unaligned offset", d.ReadBlocks([][]byte{buf[:BlockSize]}, 512), ErrUnaligned},
			{"write unaligned offset", d.WriteBlocks([][]byte{buf[:BlockSize]}, 4097), ErrUnaligned},
			{"write short buffer", d.WriteBlocks([][]byte{buf[:512]}, 0), ErrUnaligned},
			{"read misaligned buffer", d.ReadBlocks([][]byte{misaligned}, 0), ErrUnaligned},
			{"write misaligned buffer", d.WriteBlocks([][]byte{buf[:BlockSize], misaligned}, 0), ErrUnaligned},
			{"read past end", d.ReadBlocks([][]byte{buf}, testSize-BlockSize), ErrOutOfRange},
			{"write at end", d.WriteBlocks([][]byte{buf[:BlockSize]}, testSize), ErrOutOfRange},
			{"write negative", d.WriteBlocks([][]byte{buf[:BlockSize]}, -BlockSize), ErrOutOfRange},
			{"punch unaligned", d.Punch(BlockSize, 100), ErrUnaligned},
			{"punch past end", d.Punch(testSize-BlockSize, 2*BlockSize), ErrOutOfRange},
			{"punch huge", d.Punch(BlockSize, 1<<62), ErrOutOfRange},
		}
		for _, c := range cases {
			var oe *OpError
			if !errors.Is(c.err, c.want) || !errors.As(c.err, &oe) {
				t.Errorf("%s: %v, want an *OpError wrapping %v", c.name, c.err, c.want)
			}
		}
	})

	t.Run("concurrent disjoint writes", func(t *testing.T) {
		const workers, rounds, region = 8, 20, 16 * BlockSize
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				off := int64(200*BlockSize + w*region)
				for r := range rounds {
					data := pattern(region, byte(w*31+r))
					if err := d.WriteBlocks(split(data, 3), off); err != nil {
						t.Error(err)
						return
					}
					got := AlignedBuffer(region)
					if err := d.ReadBlocks([][]byte{got}, off); err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(got, data) {
						t.Errorf("worker %d round %d: read back differs", w, r)
						return
					}
				}
			}()
		}
		wg.Wait()
	})

	t.Run("closed", func(t *testing.T) {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		buf := AlignedBuffer(BlockSize)
		for name, err := range map[string]error{
			"read":  d.ReadBlocks([][]byte{buf}, 0),
			"write": d.WriteBlocks([][]byte{buf}, 0),
			"punch": d.Punch(0, BlockSize),
			"flush": d.Flush(),
			"close": d.Close(),
		} {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after close: %v, want ErrClosed", name, err)
			}
		}
	})
}

func TestMemorySemantics(t *testing.T) {
	deviceSemantics(t, NewMemory(testSize))
}

func TestRecorderSemantics(t *testing.T) {
	deviceSemantics(t, NewRecorder(testSize))
}

func TestMemoryBytesAndClone(t *testing.T) {
	m := NewMemory(8*BlockSize + 100) // rounded down
	if m.Size() != 8*BlockSize {
		t.Fatalf("Size = %d", m.Size())
	}
	data := pattern(2*BlockSize, 5)
	if err := m.WriteBlocks([][]byte{data}, 3*BlockSize); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8*BlockSize)
	copy(want[3*BlockSize:], data)
	got := m.Bytes()
	if !bytes.Equal(got, want) {
		t.Fatal("Bytes differs from the written contents")
	}
	got[3*BlockSize] ^= 0xff
	c := m.Clone()
	if !bytes.Equal(m.Bytes(), want) || !bytes.Equal(c.Bytes(), want) {
		t.Fatal("Bytes is not a copy, or Clone differs")
	}
	if err := c.Punch(0, c.Size()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Bytes(), want) || !isZero(c.Bytes()) {
		t.Fatal("Clone shares storage with its source")
	}
}

func TestOpErrorNamesOperation(t *testing.T) {
	err := NewMemory(testSize).WriteBlocks([][]byte{AlignedBuffer(BlockSize)}, 4097)
	want := "device write memory at offset 4097 (+4096 bytes): " + ErrUnaligned.Error()
	if fmt.Sprint(err) != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}
