package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
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
// influence ciphertext it holds in memory each time that grows; spill is
// given the spill file when it is made; admitted is given the
// spill file once the batch is admitted, before it is read back; done is
// given what decryptBatch returned; share is told of each coefficient
// share of task about to be made (request i of the batch), and may delay
// it, as a slow member would be.
type batchHooks struct {
	held     func(bytes int)
	spill    func(f *os.File)
	admitted func(f *os.File)
	done     func(err error)
	share    func(task string, i int)
}

// noteHeld tells a test's hook that decryptBatch holds n bytes of
// ciphertext (the one request's it works on).
func (c *Client) noteHeld(n int) {
	if h := c.batchTest; h != nil && h.held != nil {
		h.held(n)
	}
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
//
// The member holds one request's ciphertext at a time (issue 19): each is
// written, once verified, to a spill file (batchSpill) with the SHA-256 of
// the bytes verified, and read back for its share after the admission;
// every one is checked against its digest before the first share is made
// (ErrBatchSpillCorrupt), and the file is removed when the task ends. One
// multiplier vector is held at a time too (the requests are verified
// grouped by vector). A spill that fails (ErrBatchSpill) is this member's
// error, returned, not a refusal.
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
	// The ciphertexts are verified one at a time, each written to the
	// spill file once verified and dropped from memory, and read back
	// after the batch is admitted: a member holds one ciphertext, not
	// the batch's (several MB each at 100k parameters, 1.2 GB at 30
	// clients). Not fetched again after admission: the coordinator could
	// serve other bytes the second time.
	spill, err := c.newBatchSpill(id, len(items))
	if err != nil {
		return err
	}
	defer spill.remove()
	// A download refused as for a closed task may mean that the batch
	// completed without this member while it verified: the refusal says
	// so (auth.ReasonTaskClosed), or, from a coordinator that names no
	// reason, asked again for an object of the task this member did
	// download (probe), the coordinator says whether it is still open. If
	// it is not, nothing is refused and nothing more is done.
	round, probe := reqs[0].Round, ""
	late := func(err error) error {
		if closed, how := c.closedBy(ctx, id, probe, err); closed {
			return c.closedWithout(id, round, how, 0, len(reqs))
		}
		return err
	}
	// Verified grouped by multiplier vector, in the order each vector
	// first appears, so that one vector is held at a time and each is
	// fetched once; the last stays cached for the round's other tasks.
	for _, i := range byVector(reqs) {
		req, it := reqs[i], items[i]
		if req.Gradient != c.gradDigest || c.grad == nil {
			raw, err := c.fetch(ctx, id, "gradient/"+hex.EncodeToString(req.Gradient[:]))
			if err != nil {
				return late(err)
			}
			grad, err := aggregation.UnmarshalGradient(raw)
			if err != nil {
				return fmt.Errorf("client: decryption task %s: gradient: %w", id, err)
			}
			// VerifyAggregate checks the vector against the request's
			// digest.
			c.grad, c.gradDigest = grad, req.Gradient
		}
		ct, err := c.fetch(ctx, id, it.GetCiphertext())
		if err != nil {
			return late(err)
		}
		c.noteHeld(len(ct))
		ev, gaps, err := c.evidence(ctx, id, req, [][]byte{ct})
		if err != nil {
			return late(err)
		}
		if err := c.member.VerifyAggregate(req, ev); err != nil {
			// Evidence refused as for no open task reads as missing: the
			// ciphertext downloaded just now says whether the task closed.
			// Missing evidence is what a closed task looks like; any
			// other failure is logged even then (unverifiedClosed).
			if probe == "" {
				probe = it.GetCiphertext()
			}
			if closed, how := c.taskClosed(ctx, id, probe); closed {
				c.unverifiedClosed(gaps, err, "batched influence request not verified, and the task has closed: no share, nothing sent", "task", id, "request", i, "client", req.Contributors[0])
				return c.closedWithout(id, round, how, 0, len(reqs))
			}
			c.log.Error("batched influence request not verified: no share of the batch", "task", id, "request", i, "client", req.Contributors[0], "err", err)
			return refuse(fmt.Errorf("client: decryption task %s, request %d (client %q): %w", id, i, req.Contributors[0], err))
		}
		if err := spill.put(i, ct); err != nil {
			return err
		}
		if probe == "" {
			// Small, and this member's to download while the task is open.
			probe = "submission/" + req.Contributors[0]
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
	if errors.Is(err, aggregation.ErrNotVerified) {
		// Every request was verified above, but the member keeps what it
		// verified for one (key, round, attempt) at a time: a batch
		// that mixes them cannot be admitted whole, and is the
		// coordinator's to fix.
		return c.refuse(ctx, id, err)
	}
	if err != nil {
		return fmt.Errorf("client: decryption task %s: %w", id, err)
	}
	if h := c.batchTest; h != nil && h.admitted != nil {
		h.admitted(spill.f)
	}
	// Every ciphertext read back is checked before the first share is
	// made: a share made is a product served, never made again, so a
	// spill file that changed must cost no request of the batch.
	if err := spill.check(); err != nil {
		return err
	}
	// The batch completes once t members answered: while this member
	// makes its shares, it asks every closedPoll whether the task is
	// still open, and stops if it is not (it would only be refused).
	w := c.watchTask(ctx, id, probe)
	defer w.stop()
	parts := map[string][]byte{"transcript-signature": sig}
	var buf []byte
	for i, req := range reqs {
		if w.closed.Load() {
			return c.closedWithout(id, round, w.how, i, len(reqs))
		}
		if buf, err = spill.get(i, buf); err != nil {
			return err
		}
		c.noteHeld(len(buf))
		if h := c.batchTest; h != nil && h.share != nil {
			h.share(id, i)
		}
		share, err := c.member.DecryptCoefficientShare(req, buf)
		if errors.Is(err, aggregation.ErrPolicy) {
			return c.refuse(ctx, id, err)
		}
		if err != nil {
			return fmt.Errorf("client: decryption task %s, request %d: %w", id, i, err)
		}
		parts[fmt.Sprintf("coefficients/%d", i)] = share
	}
	w.stop()
	if w.closed.Load() {
		return c.closedWithout(id, round, w.how, len(reqs), len(reqs))
	}
	if err := c.answered(c.sendShares(ctx, id, parts), id, round, len(reqs)); err != nil {
		return err
	}
	c.log.Info("coefficient shares sent", "task", id, "scalars", len(reqs))
	return nil
}

// byVector is the indices of reqs grouped by multiplier vector, the groups
// in the order each vector first appears and each group in batch order.
func byVector(reqs []aggregation.DecryptRequest) []int {
	group := map[[32]byte]int{}
	var groups [][]int
	for i, req := range reqs {
		g, ok := group[req.Gradient]
		if !ok {
			g = len(groups)
			group[req.Gradient] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	out := make([]int, 0, len(reqs))
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}
