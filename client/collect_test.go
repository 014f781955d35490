package client

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
)

// chunked returns a recv function that yields data in chunks of size n,
// each a fresh slice as protobuf's unmarshalling gives, then io.EOF.
func chunked(data []byte, n int) func() ([]byte, error) {
	off := 0
	return func() ([]byte, error) {
		if off >= len(data) {
			return nil, io.EOF
		}
		end := min(off+n, len(data))
		c := append([]byte(nil), data[off:end]...)
		off = end
		return c, nil
	}
}

func TestCollectJoinsChunks(t *testing.T) {
	data := make([]byte, 100_003)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, n := range []int{1 << 20, 32<<10 - 64, 1000, 1} {
		got, err := collect(chunked(data, n))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("chunks of %d: joined %d bytes differ from the %d sent", n, len(got), len(data))
		}
	}
	got, err := collect(chunked(nil, 10))
	if err != nil || len(got) != 0 {
		t.Fatalf("empty download: %d bytes, %v", len(got), err)
	}
	boom := errors.New("stream broke")
	calls := 0
	_, err = collect(func() ([]byte, error) {
		if calls++; calls > 3 {
			return nil, boom
		}
		return []byte{1}, nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("a broken stream gave %v, want %v", err, boom)
	}
}

// TestCollectCopiesOnce is the reproduction of the member's download
// cost: a 24 MiB download (one client's c₁ of a 1M-parameter update) in
// the coordinator's 32 KiB chunks. Appending to a growing slice allocated
// about 5× the download beside the chunks themselves; joining once
// allocates the download once.
func TestCollectCopiesOnce(t *testing.T) {
	const size = 24 << 20
	data := make([]byte, size)
	var before, after runtime.MemStats
	// The chunks' own allocations are the stream's, counted apart.
	chunkBytes := uint64(size)
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := collect(chunked(data, 32<<10-64))
	runtime.ReadMemStats(&after)
	if err != nil || len(got) != size {
		t.Fatalf("collect: %d bytes, %v", len(got), err)
	}
	extra := float64(after.TotalAlloc-before.TotalAlloc-chunkBytes) / size
	t.Logf("allocated %.2f× the download beside its chunks", extra)
	if extra > 1.1 {
		t.Fatalf("collect allocated %.2f× the %d-byte download beside its chunks, want at most 1.1× (one copy)", extra, size)
	}
}
