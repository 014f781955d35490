package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tallyfl/tally/model"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// schemaOnly is a coordinator that answers Schema and counts Enroll calls.
type schemaOnly struct {
	tallyv1.UnimplementedCoordinatorServiceServer
	classes []string
	enrols  atomic.Int32
}

func (s *schemaOnly) Schema(context.Context, *tallyv1.SchemaRequest) (*tallyv1.SchemaResponse, error) {
	return &tallyv1.SchemaResponse{JobId: "j", Features: 1, ClassNames: s.classes}, nil
}

func (s *schemaOnly) Enroll(context.Context, *tallyv1.EnrollRequest) (*tallyv1.EnrollResponse, error) {
	s.enrols.Add(1)
	return nil, errors.New("enrolment is not what this test is about")
}

func serveSchema(t *testing.T, srv *schemaOnly) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	tallyv1.RegisterCoordinatorServiceServer(g, srv)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestLabelsCheckedBeforeEnrol: a client whose labels the job cannot use
// (label 2 in a two-class job; a name the job does not have) fails with
// ErrJob before any Enroll call reaches the coordinator.
func TestLabelsCheckedBeforeEnrol(t *testing.T) {
	for _, tc := range []struct {
		name   string
		data   model.Examples
		labels func([]string) (model.Examples, error)
		want   string
	}{
		{"label-out-of-range", model.Examples{Features: 1, X: []float64{1, 2}, Y: []int{1, 2}}, nil, "row 1 has label 2, job j has 2 classes"},
		{"name-not-in-job", model.Examples{}, func(classes []string) (model.Examples, error) {
			return model.Examples{}, errors.New(`h.csv:3: got "sick"`)
		}, `h.csv:3: got "sick"`},
		{"features", model.Examples{Features: 2, X: []float64{1, 2}, Y: []int{0}}, nil, "job j has 1 features, local data 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &schemaOnly{classes: []string{"healthy", "diabetic"}}
			c, err := New(Config{Conn: serveSchema(t, srv), Token: "token-aaaa", Data: tc.data, Labels: tc.labels})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err = c.Run(ctx)
			if !errors.Is(err, ErrJob) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want ErrJob with %q", err, tc.want)
			}
			if n := srv.enrols.Load(); n != 0 {
				t.Fatalf("%d Enroll calls reached the coordinator before the labels were checked", n)
			}
		})
	}
	// The labels callback is given the job's class names, in its order.
	srv := &schemaOnly{classes: []string{"healthy", "diabetic"}}
	var got []string
	c, err := New(Config{Conn: serveSchema(t, srv), Token: "token-aaaa", Labels: func(classes []string) (model.Examples, error) {
		got = classes
		return model.Examples{Features: 1, X: []float64{1}, Y: []int{1}}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(context.Background())
	if !errors.Is(err, ErrRefused) || srv.enrols.Load() != 1 {
		t.Errorf("with usable labels: %v after %d Enroll calls, want the refusal of the one Enroll", err, srv.enrols.Load())
	}
	if strings.Join(got, ",") != "healthy,diabetic" {
		t.Errorf("Labels was given %q, want the job's [healthy diabetic]", got)
	}
}
