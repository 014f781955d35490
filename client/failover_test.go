package client

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeConn answers every call with err.
type fakeConn struct {
	err   error
	calls int
}

func (f *fakeConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	f.calls++
	return f.err
}

func (f *fakeConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	f.calls++
	return nil, f.err
}

// A call that fails Unavailable moves the next ones to the next address,
// in order and round again; any other failure does not.
func TestFailoverMovesOnUnavailableOnly(t *testing.T) {
	dead := &fakeConn{err: status.Error(codes.Unavailable, "connection refused")}
	refusing := &fakeConn{err: status.Error(codes.PermissionDenied, "no")}
	live := &fakeConn{}
	f := NewFailover([]grpc.ClientConnInterface{dead, refusing, live}, []string{"a", "b", "c"}, nil)
	ctx := context.Background()
	if err := f.Invoke(ctx, "/m", nil, nil); status.Code(err) != codes.Unavailable || f.Current() != 1 {
		t.Fatalf("after Unavailable: err %v, current %d, want 1", err, f.Current())
	}
	if err := f.Invoke(ctx, "/m", nil, nil); status.Code(err) != codes.PermissionDenied || f.Current() != 1 {
		t.Fatalf("a refusal must not move on: err %v, current %d", err, f.Current())
	}
	refusing.err = status.Error(codes.Unavailable, "gone")
	if _, err := f.NewStream(ctx, &grpc.StreamDesc{}, "/m"); err == nil || f.Current() != 2 {
		t.Fatalf("stream: err %v, current %d, want 2", err, f.Current())
	}
	if err := f.Invoke(ctx, "/m", nil, nil); err != nil || live.calls != 1 {
		t.Fatalf("the live address: err %v, calls %d", err, live.calls)
	}
	live.err = status.Error(codes.Unavailable, "gone too")
	_ = f.Invoke(ctx, "/m", nil, nil)
	if f.Current() != 0 {
		t.Fatalf("after the last address: current %d, want 0 (round again)", f.Current())
	}
	if one := NewFailover([]grpc.ClientConnInterface{dead}, []string{"a"}, nil); one.Invoke(ctx, "/m", nil, nil) == nil || one.Current() != 0 {
		t.Fatal("a single address has nowhere to go")
	}
}
