package crashtest

import (
	"bytes"
	"testing"

	"github.com/reflinkfs/reflinkfs/internal/device"
)

// A power cut may persist any subset of the blocks of an unflushed
// multi-block write: the crash images must include whole, lost and torn
// writes, and leave flushed writes alone.
func TestPowerCutTearsWrites(t *testing.T) {
	const blocks = 8
	r := &Recording{cfg: Config{DeviceSize: 1 << 20}, dev: &countingDevice{Recorder: device.NewRecorder(1 << 20)}}
	write := func(off int64, fill byte) {
		buf := device.AlignedBuffer(blocks * BlockSize)
		for i := range buf {
			buf[i] = fill
		}
		if err := r.dev.WriteBlocks([][]byte{buf}, off); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 1)
	if err := r.dev.Flush(); err != nil {
		t.Fatal(err)
	}
	write(blocks*BlockSize, 2) // unflushed
	kinds := map[string]int{}
	for seed := uint64(1); seed < 200; seed += 2 {
		img := r.image(Point{Ops: 3, PowerCut: true, KeepSeed: seed})
		data := img.Bytes()
		if !bytes.Equal(data[:blocks*BlockSize], bytes.Repeat([]byte{1}, blocks*BlockSize)) {
			t.Fatalf("seed %#x: the flushed write is not intact", seed)
		}
		kept := 0
		for b := range blocks {
			blk := data[(blocks+b)*BlockSize : (blocks+b+1)*BlockSize]
			switch {
			case bytes.Equal(blk, bytes.Repeat([]byte{2}, BlockSize)):
				kept++
			case !bytes.Equal(blk, make([]byte, BlockSize)):
				t.Fatalf("seed %#x: block %d holds neither the write nor zeros", seed, b)
			}
		}
		switch kept {
		case 0:
			kinds["lost"]++
		case blocks:
			kinds["kept"]++
		default:
			kinds["torn"]++
		}
	}
	if kinds["lost"] == 0 || kinds["kept"] == 0 || kinds["torn"] == 0 {
		t.Fatalf("crash images of an unflushed 8-block write: %v; want some lost, kept and torn", kinds)
	}
	if img := r.image(Point{Ops: 3, PowerCut: false, KeepSeed: 3}); !bytes.Equal(img.Bytes()[blocks*BlockSize:2*blocks*BlockSize], bytes.Repeat([]byte{2}, blocks*BlockSize)) {
		t.Fatal("a process kill lost an unflushed write")
	}
}
