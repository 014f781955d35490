package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/tallyfl/tally/aggregation"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// ErrBatchVersion: a batch of influence requests in a wire form this member
// does not know (DecryptTask.coefficient_batch_version).
var ErrBatchVersion = errors.New("client: unknown coefficient batch version")

// ErrBatchLabels: a batched request whose task-level labels (client, vector
// digest, ciphertext name) disagree with the request itself.
var ErrBatchLabels = errors.New("client: a batched request's labels disagree with it")

// batchHooks lets a test watch decryptBatch: held is told the bytes of
// influence ciphertext it holds in memory each time that grows.
type batchHooks struct {
	held func(bytes int)
}

// decryptBatch answers a batch of influence scalar requests in one task
// (aggregation.CoefficientBatchVersion): every request is verified
// (Member.VerifyAggregate, against its client's signed ciphertexts and its
// committed multiplier vector), then the batch is admitted whole into the
// transcript (Member.AdmitBatch), which is persisted before any share is
// made; then one message carries a coefficient share of each request and
// the one signature of the batch's last head. A request that fails any
// check refuses the whole batch, named by its index and client: see
// aggregation.Member.AdmitBatch for why whole.
func (c *Client) decryptBatch(ctx context.Context, t *tallyv1.DecryptTask) error {
	id := t.GetTaskId()
	refuse := func(err error) error {
		if rerr := c.refuse(ctx, id, err); rerr != nil {
			c.log.Warn("could not tell the coordinator of the refusal", "task", id, "err", rerr)
			return err
		}
		return nil
	}
	if v := t.GetCoefficientBatchVersion(); v != aggregation.CoefficientBatchVersion {
		return refuse(fmt.Errorf("%w: decryption task %s is a batch of version %d, this member knows %d", ErrBatchVersion, id, v, aggregation.CoefficientBatchVersion))
	}
	items := t.GetCoefficientRequests()
	if len(items) > aggregation.MaxBatchRequests {
		return refuse(fmt.Errorf("%w: decryption task %s: %d requests, at most %d", aggregation.ErrInvalidInput, id, len(items), aggregation.MaxBatchRequests))
	}
	reqs := make([]aggregation.DecryptRequest, len(items))
	for i, it := range items {
		req := &reqs[i]
		if err := req.UnmarshalBinary(it.GetRequest()); err != nil {
			return fmt.Errorf("client: decryption task %s, request %d: %w", id, i, err)
		}
		if err := c.checkDecryptRequest(id, *req); err != nil {
			// A contradiction of the manifest: refused, and returned as
			// decrypt returns it for a single request.
			_ = refuse(err)
			return err
		}
		if req.Purpose != aggregation.PurposeInfluence || len(req.Contributors) != 1 || req.Contributors[0] != it.GetClient() ||
			hex.EncodeToString(req.Gradient[:]) != hex.EncodeToString(it.GetGradient()) || !strings.HasPrefix(it.GetCiphertext(), "ciphertext/") {
			return refuse(fmt.Errorf("%w: decryption task %s, request %d: labelled client %q, vector %x, ciphertext %q; the request is %s for %q with vector %x",
				ErrBatchLabels, id, i, it.GetClient(), it.GetGradient(), it.GetCiphertext(), req.Purpose, req.Contributors, req.Gradient[:8]))
		}
	}
	cts := make([][]byte, len(items))
	for i, it := range items {
		ct, err := c.fetch(ctx, id, it.GetCiphertext())
		if err != nil {
			return err
		}
		cts[i] = ct
		if h := c.batchTest; h != nil && h.held != nil {
			n := 0
			for _, ct := range cts {
				n += len(ct)
			}
			h.held(n)
		}
	}
	// Each distinct multiplier vector once, by its digest; the last one
	// stays cached for the round's other tasks.
	vectors := map[[32]byte][]float64{}
	if c.grad != nil {
		vectors[c.gradDigest] = c.grad
	}
	for _, req := range reqs {
		if _, ok := vectors[req.Gradient]; ok {
			continue
		}
		raw, err := c.fetch(ctx, id, "gradient/"+hex.EncodeToString(req.Gradient[:]))
		if err != nil {
			return err
		}
		grad, err := aggregation.UnmarshalGradient(raw)
		if err != nil {
			return fmt.Errorf("client: decryption task %s: gradient: %w", id, err)
		}
		// VerifyAggregate checks the vector against the request's digest.
		vectors[req.Gradient] = grad
	}
	for i, req := range reqs {
		c.grad, c.gradDigest = vectors[req.Gradient], req.Gradient
		ev, err := c.evidence(ctx, id, req, cts[i:i+1])
		if err != nil {
			return err
		}
		if err := c.member.VerifyAggregate(req, ev); err != nil {
			c.log.Error("batched influence request not verified: no share of the batch", "task", id, "request", i, "client", req.Contributors[0], "err", err)
			return refuse(fmt.Errorf("client: decryption task %s, request %d (client %q): %w", id, i, req.Contributors[0], err))
		}
	}
	entries, err := transcriptEntries(id, t.GetTranscriptEntries())
	if err != nil {
		return err
	}
	sig, err := c.member.AdmitBatch(reqs, entries)
	if serr := c.saveTranscript(); serr != nil {
		return serr
	}
	if errors.Is(err, aggregation.ErrTranscriptFork) || errors.Is(err, aggregation.ErrTranscript) {
		c.log.Error("THE COORDINATOR SHOWS THIS MEMBER A DECRYPTION TRANSCRIPT THAT DOES NOT HOLD; refusing", "task", id, "err", err)
		return c.refuse(ctx, id, err)
	}
	if errors.Is(err, aggregation.ErrPolicy) || errors.Is(err, aggregation.ErrNotMember) || errors.Is(err, aggregation.ErrInvalidInput) {
		return c.refuse(ctx, id, err)
	}
	if err != nil {
		return fmt.Errorf("client: decryption task %s: %w", id, err)
	}
	parts := map[string][]byte{"transcript-signature": sig}
	for i, req := range reqs {
		share, err := c.member.DecryptCoefficientShare(req, cts[i])
		if errors.Is(err, aggregation.ErrPolicy) {
			return c.refuse(ctx, id, err)
		}
		if err != nil {
			return fmt.Errorf("client: decryption task %s, request %d: %w", id, i, err)
		}
		parts[fmt.Sprintf("coefficients/%d", i)] = share
	}
	c.log.Info("coefficient shares sent", "task", id, "scalars", len(reqs))
	return c.sendShares(ctx, id, parts)
}
