package coordinator

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// Edge aggregators (package edge, `tally edge`). The job lists its edges,
// each with the Ed25519 key its own calls are signed with; an edge relays
// its clients' calls under their own signatures, and calls EdgeTask and
// EdgeSubmit under its own. The coordinator verifies every client's signed
// submission in a partial, keeps each client's c₁ for the members, adds
// the partial whole, and counts each client as if it had uploaded itself:
// the receipts name every client.

// ErrNotEdge refuses an Edge call signed by a key the job does not list.
var ErrNotEdge = errors.New("coordinator: not an edge of this job")

// edgeKeys parses the job's edge list.
func edgeKeys(job engine.Job) (map[string]ed25519.PublicKey, error) {
	out := map[string]ed25519.PublicKey{}
	for _, e := range job.Edges {
		k, err := hex.DecodeString(e.PublicKey)
		if err != nil || len(k) != ed25519.PublicKeySize || e.ID == "" {
			return nil, fmt.Errorf("%w: edge %q: an id and a hex Ed25519 public key are required", engine.ErrConfig, e.ID)
		}
		out[e.ID] = ed25519.PublicKey(k)
	}
	return out, nil
}

// kind is the part name's kind, before its first slash.
func kind(part string) string {
	k, _, _ := strings.Cut(part, "/")
	return k
}

// isEdgeMethod reports whether method is one only edges call.
func isEdgeMethod(method string) bool {
	return strings.HasPrefix(method, "/"+tallyv1.CoordinatorService_ServiceDesc.ServiceName+"/Edge")
}

// authenticateEdge verifies an edge's call c of method: the key is the
// one the job lists for the edge it names. A signature that does not
// verify under it, or an id the job does not list, is ErrNotEdge, which
// the edge is told by name (auth.ReasonNotEdge): its id or key is wrong.
// A call outside the clock skew, replayed or beyond the nonce bounds is
// refused as a client's would be, not as ErrNotEdge.
func (s *Service) authenticateEdge(c auth.Call, method string, now time.Time) (string, error) {
	key, ok := s.edges[c.Client]
	if !ok {
		key = unknownClientKey
	}
	err := s.verifier.Verify(c, key, method, now)
	switch {
	case err == nil && ok:
		return c.Client, nil
	case err == nil, errors.Is(err, auth.ErrBadSig):
		return "", fmt.Errorf("%w: %w: the job lists no edge %q with the key that signed the call", ErrBadSession, ErrNotEdge, c.Client)
	case errors.Is(err, auth.ErrTooManyCalls):
		return "", err
	}
	return "", fmt.Errorf("%w: edge %q: %v", ErrBadSession, c.Client, err)
}

// EdgeTask implements CoordinatorService for edges: how to aggregate the
// open task named, if it is open and aggregable at an edge (an encrypted
// train task summed whole: not the groups valuation, whose groups the
// coordinator draws, nor moments, nor the projection valuation, whose
// products with each client's whole update are computed after the
// total's decryption and so need every client's c₀, which a partial does
// not carry: its uploads are relayed whole, as to a flat job).
func (s *Service) EdgeTask(ctx context.Context, req *tallyv1.EdgeTaskRequest) (*tallyv1.EdgeTaskResponse, error) {
	if _, err := caller(ctx); err != nil {
		return nil, toStatus(err)
	}
	s.driver.mu.RLock()
	t := s.driver.view.task
	var selected []string
	opened := s.driver.view.opened
	if t != nil && t.ID == req.GetTaskId() {
		selected = slices.Clone(t.Selected)
	}
	s.driver.mu.RUnlock()
	if t == nil || t.ID != req.GetTaskId() || t.Kind != engine.TaskTrain || !t.Encrypted() || t.Acc == nil || t.Submissions == nil || t.Kept != nil {
		return &tallyv1.EdgeTaskResponse{Aggregate: false}, nil
	}
	r := &tallyv1.EdgeTaskResponse{
		Aggregate: true, Round: int32(t.Round), Attempt: int32(t.Attempt), KeyId: t.KeyID[:], Blocks: int32(t.Acc.Blocks()),
		NumParams: int32(t.Length), JobId: s.job.ID, HeParams: s.spec.GetHeParams(), ClientKeys: map[string][]byte{},
		// A train task closes RoundTimeout after it opened (engine).
		DeadlineUnixMs: opened.Add(time.Duration(s.job.RoundTimeout)).UnixMilli(),
	}
	if t.Influence != nil {
		r.Gradient = aggregation.MarshalGradient(t.Gradient)
	}
	s.mu.Lock()
	for _, id := range selected {
		if k := s.keys[id]; k != nil {
			r.ClientKeys[id] = k
		}
	}
	s.mu.Unlock()
	return r, nil
}

// EdgeSubmit implements CoordinatorService for edges: one partial
// aggregate. Every client named must be selected for the open task and
// have a signed submission that verifies under its enrolled key; every
// part must be there, and the partial's blocks well formed, before
// anything is kept. Then each client's c₁ goes into the task's store for
// the members, the partial into the accumulator, the influence products
// into the task's Influence, and each client is counted by the engine.
func (s *Service) EdgeSubmit(stream tallyv1.CoordinatorService_EdgeSubmitServer) error {
	edgeID, err := caller(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return toStatus(err)
	}
	h := first.GetHeader()
	if h == nil || len(h.GetClients()) == 0 {
		return toStatus(fmt.Errorf("%w: edge %s: a partial's first message names its clients", ErrBadEncoding, edgeID))
	}
	s.driver.mu.RLock()
	task := s.driver.view.task
	s.driver.mu.RUnlock()
	if task == nil || task.ID != h.GetTaskId() || task.Kind != engine.TaskTrain || task.Acc == nil || task.Submissions == nil {
		return toStatus(fmt.Errorf("%w: %q is not an open train task", engine.ErrNoTask, h.GetTaskId()))
	}
	blocks := task.Acc.Blocks()
	params := s.job.Params
	clients := make([]string, 0, len(h.GetClients()))
	subs := make([]*aggregation.Submission, 0, len(h.GetClients()))
	for _, c := range h.GetClients() {
		id := c.GetClientId()
		if _, err := s.uploadTask(id, task.ID, false); err != nil {
			return s.refuseUpload(id, "train", fmt.Errorf("edge %s: %w", edgeID, err))
		}
		sub, err := s.verifySubmission(id, &tallyv1.SubmitHeader{TaskId: task.ID, Samples: c.GetSamples(), Submission: c.GetSubmission()}, task, blocks)
		if err != nil {
			return s.refuseUpload(id, "train", fmt.Errorf("edge %s: %w", edgeID, err))
		}
		clients, subs = append(clients, id), append(subs, sub)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(clients)))) != len(clients) {
		return toStatus(fmt.Errorf("%w: edge %s named a client twice", ErrBadEncoding, edgeID))
	}
	index := map[string]int{}
	for i, id := range clients {
		index[id] = i
	}
	// Every part's size is known from the header: nothing beyond it is kept.
	ctSize, c1Size := params.CiphertextSize(), params.C1Size()
	partial := make([][]byte, blocks)
	c1s := make([][][]byte, len(clients))
	for i := range c1s {
		c1s[i] = make([][]byte, blocks)
	}
	products := make([][]byte, len(clients))
	maxProduct := 2 * ctSize
	add := func(m *tallyv1.EdgeSubmitRequest) error {
		part, data := m.GetPart(), m.GetData()
		grow := func(dst *[]byte, limit int) error {
			if len(*dst)+len(data) > limit {
				return fmt.Errorf("%w: edge %s: part %q beyond %d bytes", ErrBadEncoding, edgeID, part, limit)
			}
			if *dst == nil && (len(data) == limit || kind(part) == "product") {
				// A whole part in one message (the usual case) is kept
				// as the message holds it: no copy.
				*dst = data
				return nil
			}
			if *dst == nil {
				*dst = make([]byte, 0, limit)
			}
			*dst = append(*dst, data...)
			return nil
		}
		switch k, rest, _ := strings.Cut(part, "/"); k {
		case "partial":
			b, err := strconv.Atoi(rest)
			if err != nil || b < 0 || b >= blocks {
				return fmt.Errorf("%w: edge %s: part %q", ErrBadEncoding, edgeID, part)
			}
			return grow(&partial[b], ctSize)
		case "c1":
			id, bs, _ := strings.Cut(rest, "/")
			i, ok := index[id]
			b, err := strconv.Atoi(bs)
			if !ok || err != nil || b < 0 || b >= blocks {
				return fmt.Errorf("%w: edge %s: part %q", ErrBadEncoding, edgeID, part)
			}
			return grow(&c1s[i][b], c1Size)
		case "product":
			i, ok := index[rest]
			if !ok || task.Influence == nil {
				return fmt.Errorf("%w: edge %s: part %q", ErrBadEncoding, edgeID, part)
			}
			return grow(&products[i], maxProduct)
		}
		return fmt.Errorf("%w: edge %s: part %q", ErrBadEncoding, edgeID, part)
	}
	if first.GetPart() != "" {
		if err := add(first); err != nil {
			return toStatus(err)
		}
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return toStatus(err)
		}
		if err := add(m); err != nil {
			return toStatus(err)
		}
	}
	for b, ct := range partial {
		if err := task.Acc.CheckPartial(clients, ct); err != nil {
			return toStatus(fmt.Errorf("%w: edge %s partial block %d: %v", ErrBadEncoding, edgeID, b, err))
		}
	}
	for i, id := range clients {
		for b, c1 := range c1s[i] {
			if len(c1) != c1Size {
				return toStatus(fmt.Errorf("%w: edge %s sent %d bytes of the c1 of client %s block %d, want %d", ErrBadEncoding, edgeID, len(c1), id, b, c1Size))
			}
		}
		if task.Influence != nil && len(products[i]) == 0 {
			return toStatus(fmt.Errorf("%w: edge %s sent no influence product for client %s", ErrBadEncoding, edgeID, id))
		}
	}
	// Kept from here on.
	for i, id := range clients {
		raw := h.GetClients()[i].GetSubmission()
		if err := task.Submissions.Put(id, raw, subs[i]); err != nil {
			return toStatus(fmt.Errorf("%w: %w", ErrBadSubmission, err))
		}
		for b, c1 := range c1s[i] {
			if err := task.Submissions.AddC1(params, id, b, c1); err != nil {
				return toStatus(fmt.Errorf("%w: %w", ErrBadSubmission, err))
			}
		}
		if task.Influence != nil {
			if err := task.Influence.AddProduct(id, products[i]); err != nil && !errors.Is(err, aggregation.ErrDuplicate) {
				return toStatus(fmt.Errorf("%w: edge %s product of %s: %v", ErrBadEncoding, edgeID, id, err))
			}
		}
	}
	for b, ct := range partial {
		if err := task.Acc.AddPartial(clients, ct); err != nil {
			return toStatus(fmt.Errorf("%w: edge %s partial block %d: %v", ErrBadEncoding, edgeID, b, err))
		}
	}
	resp := &tallyv1.EdgeSubmitResponse{}
	for _, c := range h.GetClients() {
		var digest [32]byte
		copy(digest[:], c.GetDigest())
		acts, err := s.driver.Step(stream.Context(), engine.EvSubmit{Client: c.GetClientId(), TaskID: task.ID, Samples: c.GetSamples(), Digest: digest, Encrypted: true, Bytes: c.GetBytes()})
		if err != nil {
			return toStatus(err)
		}
		for _, a := range acts {
			if r, ok := a.(engine.ActReply); ok && r.Client == c.GetClientId() {
				if r.Err != nil {
					s.logs.Log(slog.LevelWarn, "edge client not counted", "edge", edgeID, "client", r.Client, "reason", r.Err.Error())
					break
				}
				resp.Accepted = append(resp.Accepted, r.Client)
				if r.Duplicate {
					resp.Duplicate = append(resp.Duplicate, r.Client)
				}
			}
		}
	}
	return stream.SendAndClose(resp)
}
