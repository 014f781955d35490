package aggregation

import (
	"fmt"
	"slices"
)

// CoefficientBatchVersion names the wire form of a batch of influence
// scalar requests in one decryption task (the proto's
// DecryptTask.coefficient_batch_version): the requests in transcript
// order, each with its client, vector digest and ciphertext download name,
// answered with one coefficient share per request and one signature of
// the head after the last. A member refuses a batch of another version.
const CoefficientBatchVersion = 1

// MaxBatchRequests bounds the requests of one batch: L = 16 vectors for
// 4,096 clients, far beyond a round's, and a bound on what one task makes
// a member compute and the coordinator buffer.
const MaxBatchRequests = 1 << 16

// AdmitBatch admits a batch of influence requests (see [Member.Admit]) as
// consecutive entries of the job's transcript, in the order given — the
// order the coordinator appended them in — and returns this member's one
// signature of the head after the last of them, which covers every entry
// of the batch (each head chains the one before). entries are the
// transcript entries the coordinator says were added before the batch.
//
// The batch is admitted whole or not at all: a request that fails the
// shape checks, was not verified ([ErrNotVerified], as for
// [Member.Admit]: the signature covers every entry of the batch) or
// fails the transcript's rules ([Transcript.Check]) refuses the
// batch with its error, naming the request by index and client, and no
// request of the batch is admitted (so none can be served). Whole, not
// request by request, because the transcript is a chain: once this member
// cannot append entry j, entry j+1 — whose previous head is entry j's — is
// not one it can append either, so partial service could only ever be a
// prefix chosen by where the coordinator put the bad request; and an
// honest coordinator checks each request under the same rules before it
// publishes, so a refused one says the coordinator deviated (or this
// member's state differs from the one it assumed, as after a restart,
// where every request of the batch is refused with [ErrAlreadyServed]).
// The entries of the batch before the refused one stay in this member's
// transcript, as entries it holds but did not sign: they only add to what
// the rules forbid, and they are the coordinator's chain as published.
//
// Admitting the same batch again (a retransmission) returns the same
// signature; a batch that overlaps an admitted one without being it is
// refused with [ErrAlreadyServed].
func (m *Member) AdmitBatch(reqs []DecryptRequest, entries []TranscriptEntry) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inst == nil || m.tsk == nil {
		return nil, fmt.Errorf("%w: member %q has no threshold share yet", ErrState, m.id)
	}
	if len(reqs) == 0 || len(reqs) > MaxBatchRequests {
		return nil, fmt.Errorf("%w: a batch of %d requests (1 to %d)", ErrInvalidInput, len(reqs), MaxBatchRequests)
	}
	ids := make([][32]byte, len(reqs))
	admitted := 0
	for i, req := range reqs {
		if err := checkInfluenceRequest(req, m.inst); err != nil {
			return nil, fmt.Errorf("batch request %d (%s): %w", i, batchClient(req), err)
		}
		if !slices.Contains(req.Participants, m.id) {
			return nil, fmt.Errorf("batch request %d (%s): %w: %q is not among the request's participants", i, batchClient(req), ErrNotMember, m.id)
		}
		ids[i] = req.ID()
		if slices.Contains(ids[:i], ids[i]) {
			return nil, fmt.Errorf("batch request %d (%s): %w: %w: the same request twice in one batch", i, batchClient(req), ErrPolicy, ErrAlreadyServed)
		}
		if err := m.requireVerified(req); err != nil {
			return nil, fmt.Errorf("member %q: batch request %d (%s): %w", m.id, i, batchClient(req), err)
		}
		if _, ok := m.admitted[ids[i]]; ok {
			admitted++
		}
	}
	if err := m.checkCoefficientBudget(0); err != nil {
		return nil, err
	}
	last := m.admitted[ids[len(ids)-1]]
	if admitted == len(reqs) && slices.IndexFunc(ids, func(id [32]byte) bool { return string(m.admitted[id]) != string(last) }) < 0 {
		return last, nil
	}
	if admitted > 0 {
		return nil, fmt.Errorf("%w: %w: member %q: %d of the batch's %d requests were admitted in another batch", ErrPolicy, ErrAlreadyServed, m.id, admitted, len(reqs))
	}
	if m.transcript == nil {
		m.transcript = NewTranscript(m.inst.job)
	}
	tr := m.transcript
	if tr.job != m.inst.job {
		return nil, fmt.Errorf("%w: member %q holds the transcript of job %q, its key instance is job %q's", ErrTranscript, m.id, tr.job, m.inst.job)
	}
	n := tr.Len()
	if err := tr.Extend(entries, m.policy, m.identityKey, m.keys == nil); err != nil {
		m.countFrom(n)
		return nil, fmt.Errorf("member %q: %w", m.id, err)
	}
	m.countFrom(n)
	for i, req := range reqs {
		e := NewTranscriptEntry(tr.job, uint64(tr.Len()), tr.Head(), req)
		if err := tr.Check(&e, m.policy); err != nil {
			return nil, fmt.Errorf("member %q: batch request %d (%s): %w", m.id, i, batchClient(req), err)
		}
		tr.add(e)
		m.countFrom(tr.Len() - 1)
	}
	head := tr.Head()
	sig := SignTranscriptHead(m.signer, head)
	// The signature goes on the batch's last entry only: that head
	// commits to every entry of the batch before it.
	lastEntry := &tr.entries[tr.Len()-1]
	lastEntry.Signatures = map[string][]byte{m.id: sig}
	for _, id := range ids {
		m.admitted[id] = sig
	}
	return sig, nil
}

// batchClient names a request's client for an error message.
func batchClient(req DecryptRequest) string {
	if len(req.Contributors) == 1 {
		return fmt.Sprintf("client %q", req.Contributors[0])
	}
	return fmt.Sprintf("%d contributors", len(req.Contributors))
}
