package coordinator

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// fakeUpload is an upload stream whose messages the test hands over one at
// a time; entered counts the Recv calls begun.
type fakeUpload struct {
	tallyv1.CoordinatorService_SubmitUpdateServer
	ctx     context.Context
	msgs    chan *tallyv1.SubmitUpdateRequest
	entered atomic.Int32
}

func newFakeUpload(ctx context.Context) *fakeUpload {
	return &fakeUpload{ctx: ctx, msgs: make(chan *tallyv1.SubmitUpdateRequest)}
}

func (f *fakeUpload) Context() context.Context { return f.ctx }

func (f *fakeUpload) Recv() (*tallyv1.SubmitUpdateRequest, error) {
	f.entered.Add(1)
	return <-f.msgs, nil
}

// TestUploadGate checks that the gate lets only as many streams read as it
// has slots, that a stalled stream loses its slot after the lease, and
// that a stream whose context ends stops waiting.
func TestUploadGate(t *testing.T) {
	t.Run("slots=1/second stream reads after the first releases", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := newUploadGate(1, UploadLease)
			a, b := newFakeUpload(t.Context()), newFakeUpload(t.Context())
			gotA, gotB := make(chan *uploadSlot), make(chan *uploadSlot)
			go func() { _, s, _ := g.recv(a); gotA <- s }()
			synctest.Wait()
			go func() { _, s, _ := g.recv(b); gotB <- s }()
			synctest.Wait()
			if a.entered.Load() != 1 || b.entered.Load() != 0 {
				t.Fatalf("with one slot: %d and %d streams reading, want 1 and 0", a.entered.Load(), b.entered.Load())
			}
			a.msgs <- &tallyv1.SubmitUpdateRequest{}
			sa := <-gotA
			synctest.Wait()
			if b.entered.Load() != 0 {
				t.Fatal("the second stream read while the first still held the slot")
			}
			sa.release()
			sa.release() // idempotent
			synctest.Wait()
			if b.entered.Load() != 1 {
				t.Fatal("the second stream did not read after the slot was released")
			}
			b.msgs <- &tallyv1.SubmitUpdateRequest{}
			(<-gotB).release()
			if n := len(g.slots); n != 0 {
				t.Fatalf("%d slots taken after every release, want 0", n)
			}
		})
	})
	t.Run("slots=1/stalled stream loses its slot after the lease", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := newUploadGate(1, UploadLease)
			a, b := newFakeUpload(t.Context()), newFakeUpload(t.Context())
			gotA, gotB := make(chan *uploadSlot), make(chan *uploadSlot)
			go func() { _, s, _ := g.recv(a); gotA <- s }()
			synctest.Wait()
			go func() { _, s, _ := g.recv(b); gotB <- s }()
			synctest.Wait()
			if b.entered.Load() != 0 {
				t.Fatal("the second stream read before the lease ran out")
			}
			time.Sleep(UploadLease) // the bubble's clock: returns at once
			synctest.Wait()
			if b.entered.Load() != 1 {
				t.Fatal("the second stream still waits after the first stream's lease ran out")
			}
			b.msgs <- &tallyv1.SubmitUpdateRequest{}
			a.msgs <- &tallyv1.SubmitUpdateRequest{}
			(<-gotB).release()
			(<-gotA).release() // its slot went back at the lease: no second return
			if n := len(g.slots); n != 0 {
				t.Fatalf("%d slots taken after every release, want 0", n)
			}
		})
	})
	t.Run("slots=1/waiting stream gives up when its context ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			g := newUploadGate(1, UploadLease)
			ctx, cancel := context.WithCancel(t.Context())
			a, b := newFakeUpload(t.Context()), newFakeUpload(ctx)
			go func() { _, s, _ := g.recv(a); s.release() }()
			synctest.Wait()
			errB := make(chan error)
			go func() { _, _, err := g.recv(b); errB <- err }()
			synctest.Wait()
			cancel()
			if err := <-errB; !errors.Is(err, context.Canceled) {
				t.Fatalf("waiting stream's context cancelled: %v, want context.Canceled", err)
			}
			a.msgs <- &tallyv1.SubmitUpdateRequest{}
		})
	})
}

// TestCiphertextCutter checks that whole ciphertexts pass without a copy and
// that split ones, however cut, come out whole and in order.
func TestCiphertextCutter(t *testing.T) {
	const size = 10
	stream := make([]byte, 3*size)
	for i := range stream {
		stream[i] = byte(i)
	}
	cases := []struct {
		name     string
		cuts     []int // message lengths
		uncopied int   // ciphertexts handed on from the message itself
	}{
		{"one ciphertext per message", []int{10, 10, 10}, 3},
		{"header-only first message", []int{0, 10, 10, 10}, 3},
		{"pieces of 4", []int{4, 4, 4, 4, 4, 4, 4, 2}, 0},
		{"straddling messages", []int{7, 10, 10, 3}, 0},
		{"split then whole", []int{4, 6, 10, 10}, 2},
		{"all in one message", []int{30}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ciphertextCutter{size: size}
			var got [][]byte
			uncopied, off := 0, 0
			for _, n := range tc.cuts {
				msg := stream[off : off+n]
				err := c.feed(msg, func(ct []byte) error {
					if n > 0 && &ct[0] == &msg[0] {
						uncopied++
					}
					got = append(got, bytes.Clone(ct))
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				off += n
			}
			if uncopied != tc.uncopied {
				t.Errorf("%d ciphertexts handed on uncopied, want %d", uncopied, tc.uncopied)
			}
			if c.pending() != 0 || len(got) != 3 {
				t.Fatalf("%d ciphertexts and %d stray bytes, want 3 and 0", len(got), c.pending())
			}
			for i, ct := range got {
				if !bytes.Equal(ct, stream[i*size:(i+1)*size]) {
					t.Errorf("ciphertext %d = %v, want %v", i, ct, stream[i*size:(i+1)*size])
				}
			}
		})
	}
	t.Run("stray bytes are reported", func(t *testing.T) {
		c := ciphertextCutter{size: size}
		if err := c.feed(stream[:13], func([]byte) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if c.pending() != 3 {
			t.Fatalf("pending = %d, want 3", c.pending())
		}
	})
	t.Run("add's error stops the stream", func(t *testing.T) {
		c := ciphertextCutter{size: size}
		bad := errors.New("bad ciphertext")
		if err := c.feed(stream, func([]byte) error { return bad }); !errors.Is(err, bad) {
			t.Fatalf("feed = %v, want %v", err, bad)
		}
	})
}
