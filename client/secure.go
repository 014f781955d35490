package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// fetch downloads a named object of a task.
func (c *Client) fetch(ctx context.Context, taskID, name string) ([]byte, error) {
	req := &tallyv1.DownloadRequest{TaskId: taskID, Name: name}
	stream, err := c.api.Download(auth.WithFirstMessage(ctx, req), req)
	if err != nil {
		return nil, err
	}
	return collect(func() ([]byte, error) {
		msg, err := stream.Recv()
		return msg.GetData(), err
	})
}

// collect reads chunks from recv until io.EOF and returns them joined.
// The chunks are kept and copied once, into a slice of the exact total:
// appending each 32 KiB chunk to a growing slice copied a multi-megabyte
// download about five times over (Go grows large slices by 1.25×), which
// was the largest single cost of a member's verification in
// BenchmarkRound (runtime.growslice 7.2 s of 50 s sampled).
func collect(recv func() ([]byte, error)) ([]byte, error) {
	var chunks [][]byte
	total := 0
	for {
		data, err := recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(data) > 0 {
			chunks = append(chunks, data)
			total += len(data)
		}
	}
	switch len(chunks) {
	case 0:
		return nil, nil
	case 1:
		return chunks[0], nil
	}
	out := make([]byte, 0, total)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out, nil
}

// encryptor returns an encryptor for the key keyID, fetching the key once.
func (c *Client) encryptor(ctx context.Context, taskID string, keyID []byte) (*aggregation.Encryptor, error) {
	if c.enc != nil {
		id := c.enc.KeyID()
		if bytes.Equal(id[:], keyID) {
			return c.enc, nil
		}
	}
	pk, err := c.fetch(ctx, taskID, "public-key")
	if err != nil {
		return nil, err
	}
	cert, err := c.fetch(ctx, taskID, "public-key-certificate")
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	// Nothing is encrypted under a key that does not carry a valid
	// signature of every committee member over exactly that key.
	if _, err := aggregation.VerifyPublicKey(c.params, pk, cert, c.memberKeys()); err != nil {
		return nil, fmt.Errorf("client: collective public key for task %s: %w", taskID, err)
	}
	var enc *aggregation.Encryptor
	if c.cfg.Shared != nil {
		enc, err = c.cfg.Shared.encryptor(c.params, pk)
	} else {
		enc, err = aggregation.NewEncryptor(c.params, pk, runtime.GOMAXPROCS(0))
	}
	if err != nil {
		return nil, fmt.Errorf("client: collective public key: %w", err)
	}
	id := enc.KeyID()
	if !bytes.Equal(id[:], keyID) {
		return nil, fmt.Errorf("client: the coordinator served key %x for task %s, which names key %x", id[:8], taskID, keyID[:min(8, len(keyID))])
	}
	c.enc, c.encBuf = enc, nil
	return enc, nil
}

// submitEncrypted encrypts weight·v and weight under the collective key
// and streams the ciphertexts back to back, with this client's signed
// statement over them (job, round, attempt, key, weight, each block's c0
// and c1 digests): committee members decrypt only sums of ciphertexts so
// signed. Nobody without t committee members' help can read them, the
// coordinator included.
func (c *Client) submitEncrypted(ctx context.Context, taskID string, keyID []byte, round, attempt int, weight float64, v []float64) ([]byte, error) {
	enc, err := c.encryptor(ctx, taskID, keyID)
	if err != nil {
		return nil, err
	}
	if sh := c.cfg.Shared; sh != nil {
		// Clients of one process take turns to hold ciphertexts, and do
		// not keep them: see Shared.
		if err := sh.acquire(ctx); err != nil {
			return nil, err
		}
		defer func() {
			c.encBuf = nil
			sh.release()
		}()
	}
	cts, err := enc.EncryptUpdateInto(c.encBuf, v, weight)
	if err != nil {
		return nil, fmt.Errorf("client: encrypt: %w", err)
	}
	c.encBuf = cts
	h := sha256.New()
	for _, ct := range cts {
		h.Write(ct)
	}
	digest := h.Sum(nil)
	sub, err := aggregation.NewSubmission(c.params, c.job.GetJobId(), c.clientID(), uint64(round), uint64(attempt), uint64(weight), cts, c.sig.key)
	if err != nil {
		return nil, fmt.Errorf("client: sign submission for task %s: %w", taskID, err)
	}
	signed, err := sub.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("client: sign submission for task %s: %w", taskID, err)
	}
	header := &tallyv1.SubmitHeader{
		TaskId: taskID, Round: int32(round), Samples: int64(weight),
		Encoding: "ckks", Length: int64(len(cts)), Digest: digest, Submission: signed,
	}
	// One ciphertext per message when it fits, so the coordinator adds it
	// from the message without reassembling it; larger ones go in
	// chunkBytes pieces, which it reassembles.
	pieceOf := func(ct []byte) int {
		if len(ct) <= ciphertextMessageBytes {
			return len(ct)
		}
		return chunkBytes
	}
	// The first message is made before the stream: its signature covers it.
	var firstMsg *tallyv1.SubmitUpdateRequest
	if len(cts) > 0 {
		firstMsg = &tallyv1.SubmitUpdateRequest{Header: header, Data: cts[0][:min(pieceOf(cts[0]), len(cts[0]))]}
	} else {
		firstMsg = &tallyv1.SubmitUpdateRequest{Header: header}
	}
	stream, err := c.api.SubmitUpdate(auth.WithFirstMessage(ctx, firstMsg))
	if err != nil {
		return nil, err
	}
	first := true
	for _, ct := range cts {
		piece := pieceOf(ct)
		for off := 0; off < len(ct); off += piece {
			msg := &tallyv1.SubmitUpdateRequest{Data: ct[off:min(off+piece, len(ct))]}
			if first {
				msg, first = firstMsg, false
			}
			if err := stream.Send(msg); err != nil {
				goto done // the real error comes from CloseAndRecv
			}
		}
	}
done:
	if _, err := stream.CloseAndRecv(); err != nil {
		return nil, err
	}
	c.log.Info("submitted encrypted update", "task", taskID, "ciphertexts", len(cts))
	return digest, nil
}

// sendShares streams named parts to the coordinator.
func (c *Client) sendShares(ctx context.Context, taskID string, parts map[string][]byte) error {
	names := make([]string, 0, len(parts))
	for n := range parts {
		names = append(names, n)
	}
	sort.Strings(names)
	// The first message is made before the stream: its signature covers it.
	firstMsg := &tallyv1.SubmitSharesRequest{Header: &tallyv1.SharesHeader{TaskId: taskID}}
	if len(names) > 0 {
		d := parts[names[0]]
		firstMsg.Part, firstMsg.Data = names[0], d[:min(chunkBytes, len(d))]
	}
	stream, err := c.api.SubmitShares(auth.WithFirstMessage(ctx, firstMsg))
	if err != nil {
		return err
	}
	first := true
	for _, n := range names {
		data := parts[n]
		for off := 0; off == 0 || off < len(data); off += chunkBytes {
			msg := &tallyv1.SubmitSharesRequest{Part: n, Data: data[off:min(off+chunkBytes, len(data))]}
			if first {
				msg, first = firstMsg, false
			}
			if err := stream.Send(msg); err != nil {
				_, err = stream.CloseAndRecv()
				return err
			}
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// memberKeys is where committee members' identity keys are found: the
// pinned MemberKeys, or (nil) the keys the coordinator lists in each
// instance, with a warning logged once.
func (c *Client) memberKeys() aggregation.MemberKeys {
	if c.cfg.MemberKeys != nil {
		return c.cfg.MemberKeys
	}
	warn := func() {
		c.log.Warn("UNPINNED COMMITTEE: no manifest pins the committee members' identity keys; their signatures are checked against the keys the coordinator reports, so a coordinator that invents a whole committee is not detected")
	}
	if c.cfg.Shared != nil {
		c.cfg.Shared.unpinned.Do(warn)
	} else {
		c.unpinned.Do(warn)
	}
	return nil
}

// keyGen joins a committee: a fresh secret share, and a signed commitment
// to its public-key share (with this member's signature of its X25519
// key). Nothing secret-dependent leaves the member before every member has
// committed.
func (c *Client) keyGen(ctx context.Context, t *tallyv1.KeyGenTask) error {
	inst, err := aggregation.UnmarshalKeyGenInstance(c.params, t.GetInstance())
	if err != nil {
		return fmt.Errorf("client: key-generation task %s: %w", t.GetTaskId(), err)
	}
	if err := c.checkCommittee(t.GetTaskId(), inst); err != nil {
		return err
	}
	if c.inst == nil || c.inst.ID() != inst.ID() {
		if c.transcript == nil {
			c.transcript = aggregation.NewTranscript(inst.Job())
		}
		if j := c.transcript.Job(); j != inst.Job() {
			return fmt.Errorf("client: key-generation task %s is for job %q, the transcript file %s is job %q's", t.GetTaskId(), inst.Job(), c.transcriptPath(), j)
		}
		m, err := aggregation.NewMember(c.params, c.clientID(), c.identity, c.sig.key, c.memberKeys(), c.policy, c.transcript, rand.Reader)
		if err != nil {
			return err
		}
		c.member, c.inst = m, inst
	}
	commitment, err := c.member.Commit(inst)
	if err != nil {
		return fmt.Errorf("client: key-generation task %s: %w", t.GetTaskId(), err)
	}
	c.log.Info("committee key generation", "task", t.GetTaskId(), "members", len(inst.Members()), "threshold", inst.Threshold())
	return c.sendShares(ctx, t.GetTaskId(), map[string][]byte{"commitment": commitment})
}

// reveal sends this member's public-key share and its sealed Shamir
// shares, once the task carries every member's valid signed commitment.
func (c *Client) reveal(ctx context.Context, t *tallyv1.RevealTask) error {
	if c.member == nil || c.inst == nil {
		return fmt.Errorf("client: reveal task %s for a committee this client has not committed in", t.GetTaskId())
	}
	if inst, err := aggregation.UnmarshalKeyGenInstance(c.params, t.GetInstance()); err != nil || inst.ID() != c.inst.ID() {
		return fmt.Errorf("client: reveal task %s names another key-generation instance than the one this member committed in (%v)", t.GetTaskId(), err)
	}
	shares, err := c.member.Reveal(c.inst, t.GetCommitments())
	if err != nil {
		return fmt.Errorf("client: reveal task %s: %w", t.GetTaskId(), err)
	}
	parts := map[string][]byte{"public-key-share": shares.PublicKeyShare}
	for to, s := range shares.Sealed {
		parts["sealed/"+to] = s
	}
	return c.sendShares(ctx, t.GetTaskId(), parts)
}

// threshold checks every member's revealed public-key share against its
// commitment, aggregates and signs the collective key, and opens the
// Shamir shares sealed to this member.
func (c *Client) threshold(ctx context.Context, t *tallyv1.ThresholdTask) error {
	if c.member == nil || c.inst == nil {
		return fmt.Errorf("client: threshold task %s for a committee this client holds no share of", t.GetTaskId())
	}
	pkShares := map[string][]byte{}
	for _, m := range c.inst.Members() {
		s, err := c.fetch(ctx, t.GetTaskId(), "public-key-share/"+m.ID)
		if err != nil {
			return err
		}
		pkShares[m.ID] = s
	}
	_, sig, err := c.member.CertifyPublicKey(c.inst, pkShares)
	if err != nil {
		return fmt.Errorf("client: threshold task %s: %w", t.GetTaskId(), err)
	}
	sealed := t.GetSealed()
	if len(sealed) == 0 {
		// Shares too large to ride on the task (large committees) are
		// fetched one by one, from every other member of the committee.
		sealed = map[string][]byte{}
		for _, m := range c.inst.Members() {
			if m.ID == c.member.ID() {
				continue
			}
			s, err := c.fetch(ctx, t.GetTaskId(), "sealed/"+m.ID)
			if err != nil {
				return err
			}
			sealed[m.ID] = s
		}
	}
	if err := c.member.ReceiveThresholdShares(c.inst, sealed); err != nil {
		return fmt.Errorf("client: threshold task %s: %w", t.GetTaskId(), err)
	}
	return c.sendShares(ctx, t.GetTaskId(), map[string][]byte{"ack": {1}, "public-key-signature": sig})
}

// decrypt produces this member's decryption share of each block of an
// aggregate (or its coefficient share of an influence ciphertext) after
// two checks: the ciphertext is what the request says, a sum (or product)
// of client-signed ciphertexts (Member.VerifyAggregate), and the request
// passes the job's decryption transcript's rules (Member.Admit).
func (c *Client) decrypt(ctx context.Context, t *tallyv1.DecryptTask) error {
	if c.member == nil {
		return fmt.Errorf("client: decryption task %s for a committee this client holds no share of", t.GetTaskId())
	}
	if len(t.GetCoefficientRequests()) > 0 {
		err := c.decryptBatch(ctx, t)
		if h := c.batchTest; h != nil && h.done != nil {
			h.done(err)
		}
		return err
	}
	var req aggregation.DecryptRequest
	if err := req.UnmarshalBinary(t.GetRequest()); err != nil {
		return fmt.Errorf("client: decryption task %s: %w", t.GetTaskId(), err)
	}
	if err := c.checkDecryptRequest(t.GetTaskId(), req); err != nil {
		if rerr := c.refuse(ctx, t.GetTaskId(), err); rerr != nil {
			c.log.Warn("could not tell the coordinator of the refusal", "task", t.GetTaskId(), "err", rerr)
		}
		return err
	}
	blocks := int(t.GetBlocks())
	if t.GetCoefficient() {
		blocks = 1
	}
	cts := make([][]byte, blocks)
	for b := range cts {
		ct, err := c.fetch(ctx, t.GetTaskId(), fmt.Sprintf("ciphertext/%d", b))
		if err != nil {
			return err
		}
		cts[b] = ct
	}
	ev, gaps, err := c.evidence(ctx, t.GetTaskId(), req, cts)
	if err != nil {
		return err
	}
	if err := c.member.VerifyAggregate(req, ev); err != nil {
		// Evidence refused as for no open task reads as missing: the
		// block downloaded above says whether the task closed meanwhile.
		// Missing evidence is what a closed task looks like; any other
		// failure is logged even then (unverifiedClosed).
		if closed, how := c.taskClosed(ctx, t.GetTaskId(), "ciphertext/0"); closed {
			c.unverifiedClosed(gaps, err, "decryption request not verified, and the task has closed: no share, nothing sent", "task", t.GetTaskId(), "purpose", req.Purpose)
			return c.closedWithout(t.GetTaskId(), req.Round, how, 0, len(cts))
		}
		// The coordinator named a ciphertext that is not what its labels
		// say (or could not show that it is): no share, and it is told.
		c.log.Error("decryption request not verified: no share", "task", t.GetTaskId(), "purpose", req.Purpose, "err", err)
		return c.refuse(ctx, t.GetTaskId(), fmt.Errorf("client: decryption task %s: %w", t.GetTaskId(), err))
	}
	// Then the transcript: the entries since this member's head, then the
	// verified request (its c₁ digests checked above) as the next entry,
	// under the job-wide rules; persisted before any share leaves, so
	// that a restart cannot serve it again.
	entries, err := transcriptEntries(t.GetTaskId(), t.GetTranscriptEntries())
	if err != nil {
		return err
	}
	sig, err := c.member.Admit(req, entries)
	if serr := c.saveTranscript(); serr != nil {
		return serr
	}
	if errors.Is(err, aggregation.ErrTranscriptFork) || errors.Is(err, aggregation.ErrTranscript) {
		c.log.Error("THE COORDINATOR SHOWS THIS MEMBER A DECRYPTION TRANSCRIPT THAT DOES NOT HOLD; refusing", "task", t.GetTaskId(), "err", err)
		return c.refuse(ctx, t.GetTaskId(), err)
	}
	if errors.Is(err, aggregation.ErrPolicy) {
		return c.refuse(ctx, t.GetTaskId(), err)
	}
	if err != nil {
		return fmt.Errorf("client: decryption task %s: %w", t.GetTaskId(), err)
	}
	if t.GetCoefficient() {
		share, err := c.member.DecryptCoefficientShare(req, cts[0])
		if errors.Is(err, aggregation.ErrPolicy) {
			return c.refuse(ctx, t.GetTaskId(), err)
		}
		if err != nil {
			return fmt.Errorf("client: decryption task %s: %w", t.GetTaskId(), err)
		}
		return c.answered(c.sendShares(ctx, t.GetTaskId(), map[string][]byte{"coefficient": share, "transcript-signature": sig}), t.GetTaskId(), req.Round, 1)
	}
	parts := map[string][]byte{"transcript-signature": sig}
	for b, ct := range cts {
		share, err := c.member.DecryptShare(req, b, ct)
		if errors.Is(err, aggregation.ErrPolicy) {
			return c.refuse(ctx, t.GetTaskId(), err)
		}
		if err != nil {
			return fmt.Errorf("client: decryption task %s: %w", t.GetTaskId(), err)
		}
		parts[fmt.Sprintf("share/%d", b)] = share
	}
	if err := c.answered(c.sendShares(ctx, t.GetTaskId(), parts), t.GetTaskId(), req.Round, len(cts)); err != nil {
		return err
	}
	c.log.Info("decryption shares sent", "task", t.GetTaskId(), "purpose", req.Purpose, "contributors", len(req.Contributors))
	return nil
}

// evidenceGaps is what evidence did not download for a request because
// the coordinator refused it as absent (NotFound, FailedPrecondition), as
// it refuses every download of a task that has closed.
type evidenceGaps struct {
	submission bool // a contributor's signed submission
	gradient   bool // the task's multiplier vector
}

// missing reports whether err, VerifyAggregate's failure of a request
// checked against evidence with gaps g, is for want of evidence: a
// contributor's submission not downloaded (ErrUnknownContributor), its c₁
// refused (the refusal, wrapped: c₁ is downloaded as VerifyAggregate asks
// for it), or, for an influence request, the vector not downloaded
// (ErrGradientMismatch). Any other failure is the request's own.
func (g evidenceGaps) missing(err error) bool {
	switch code := status.Code(err); {
	case code == codes.NotFound || code == codes.FailedPrecondition:
		return true
	case g.submission && errors.Is(err, aggregation.ErrUnknownContributor):
		return true
	case g.gradient && errors.Is(err, aggregation.ErrGradientMismatch):
		return true
	}
	return false
}

// unverifiedClosed logs err, VerifyAggregate's failure of a request whose
// task has closed since, at WARN with msg and args, unless it is for want
// of evidence (gaps.missing), which is what a closed task looks like and
// is said at INFO (closedWithout): a coordinator that sends a forged
// request and then closes the task does not silence the member's record
// of it.
func (c *Client) unverifiedClosed(gaps evidenceGaps, err error, msg string, args ...any) {
	if !gaps.missing(err) {
		c.log.Warn(msg, append(args, "err", err)...)
	}
}

// evidence fetches what this member checks req against: every
// contributor's signed submission, a way to fetch each contributor's c1
// (called once per block by VerifyAggregate), and the round's influence
// multiplier vector when the task has one (kept by digest, so the round's
// many influence requests fetch it once). gaps says which of these the
// coordinator refused as absent.
func (c *Client) evidence(ctx context.Context, taskID string, req aggregation.DecryptRequest, cts [][]byte) (ev aggregation.Evidence, gaps evidenceGaps, err error) {
	ev = aggregation.Evidence{Ciphertexts: cts, Submissions: make(map[string][]byte, len(req.Contributors))}
	for _, id := range req.Contributors {
		raw, err := c.fetch(ctx, taskID, "submission/"+id)
		if status.Code(err) == codes.NotFound || status.Code(err) == codes.FailedPrecondition {
			// VerifyAggregate names the contributor without one.
			gaps.submission = true
			continue
		}
		if err != nil {
			return ev, gaps, err
		}
		ev.Submissions[id] = raw
	}
	// VerifyAggregate asks for each contributor's blocks in order: they
	// are fetched contributionsPerFetch at a time, one call instead of
	// one per block (each call costs the coordinator a signature check
	// and a stream), holding at most that many c1 here. A coordinator
	// without the batched form is asked block by block.
	var cache contributionCache
	ev.Contribution = func(client string, b int) ([]byte, error) {
		if c1, ok := cache.get(client, b); ok {
			return c1, nil
		}
		if !cache.perBlock {
			raw, err := c.fetch(ctx, taskID, fmt.Sprintf("contributions/%s/%d/%d", client, b, contributionsPerFetch))
			switch {
			case status.Code(err) == codes.FailedPrecondition || status.Code(err) == codes.NotFound:
				// Not served so (an older coordinator), or not there: the
				// per-block form says which.
				cache.perBlock = true
			case err != nil:
				return nil, err
			default:
				if err := cache.put(client, b, raw); err != nil {
					return nil, fmt.Errorf("client: decryption task %s: %w", taskID, err)
				}
				if c1, ok := cache.get(client, b); ok {
					return c1, nil
				}
				return nil, fmt.Errorf("client: decryption task %s: contributions/%s/%d came without block %d", taskID, client, b, b)
			}
		}
		return c.fetch(ctx, taskID, fmt.Sprintf("contribution/%s/%d", client, b))
	}
	if req.Gradient != ([32]byte{}) && req.Gradient == c.gradDigest {
		ev.Gradient = c.grad
		return ev, gaps, nil
	}
	raw, err := c.fetch(ctx, taskID, "gradient")
	switch {
	case status.Code(err) == codes.FailedPrecondition || status.Code(err) == codes.NotFound:
		// No multiplier vector in this task: VerifyAggregate refuses an
		// influence request without it.
		gaps.gradient = true
		return ev, gaps, nil
	case err != nil:
		return ev, gaps, err
	}
	grad, err := aggregation.UnmarshalGradient(raw)
	if err != nil {
		return ev, gaps, fmt.Errorf("client: decryption task %s: gradient: %w", taskID, err)
	}
	ev.Gradient, c.grad, c.gradDigest = grad, grad, aggregation.GradientDigest(grad)
	return ev, gaps, nil
}

// refuse tells the coordinator that this member's policy refused a
// decryption, so that it need not wait for the deadline.
func (c *Client) refuse(ctx context.Context, taskID string, why error) error {
	c.log.Warn("decryption refused by this member's policy", "task", taskID, "reason", why)
	return c.sendShares(ctx, taskID, map[string][]byte{"refused": []byte(why.Error())})
}

// contributionsPerFetch is how many blocks of one contributor's c1 a
// member asks for in one call: 8 blocks are 3 MiB at LogN 14, and a 1M-
// parameter update of 62 blocks takes 8 calls instead of 62.
const contributionsPerFetch = 8

// contributionCache holds the blocks of one contributor's c1 fetched last.
type contributionCache struct {
	client   string
	first    int
	blocks   [][]byte
	perBlock bool // the coordinator does not serve "contributions/"
}

func (cc *contributionCache) get(client string, b int) ([]byte, bool) {
	if client != cc.client || b < cc.first || b >= cc.first+len(cc.blocks) {
		return nil, false
	}
	return cc.blocks[b-cc.first], true
}

// put splits a "contributions/" answer (a big-endian uint32 count, then
// that many c1 of equal length) starting at block first.
func (cc *contributionCache) put(client string, first int, raw []byte) error {
	if len(raw) < 4 {
		return fmt.Errorf("contributions of %q from block %d: %d bytes, no block count", client, first, len(raw))
	}
	n := int(binary.BigEndian.Uint32(raw))
	rows := raw[4:]
	if n < 1 || n > contributionsPerFetch || len(rows)%n != 0 {
		return fmt.Errorf("contributions of %q from block %d: %d blocks in %d bytes, want 1 to %d of equal length", client, first, n, len(rows), contributionsPerFetch)
	}
	size := len(rows) / n
	cc.client, cc.first, cc.blocks = client, first, cc.blocks[:0]
	for i := range n {
		cc.blocks = append(cc.blocks, rows[i*size:(i+1)*size])
	}
	return nil
}
