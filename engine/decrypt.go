package engine

import (
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/dataset"
)

// decItem is one aggregate the committee is asked to decrypt.
type decItem struct {
	purpose string
	agg     *aggregation.Aggregate
	group   int // groups mode: the group's index
	values  []float64
	weight  float64

	// An influence scalar: the client's inner-product ciphertext (with its
	// digest; the bytes are in the collect task's spill file when it has
	// one, read back when members download them), and the decrypted a_i
	// (missing when fewer than t answered).
	coefficient bool
	client      string
	product     *aggregation.Product
	scalar      float64
	missing     bool
	decrypted   bool
	// vector is the multiplier vector of a projection scalar (nil: the
	// round's influence gradient, Task.Gradient) and vectorIndex its place
	// among the round's public vectors.
	vector      []float64
	vectorIndex int
}

// startDecrypt finalises the encrypted sums of a closed task and queues
// their decryption. In groups mode a group that ended with fewer than
// min_group_size contributors is first merged, still encrypted, into the
// smallest other group.
func (e *Engine) startDecrypt(t *Task, rec RoundRecord) []Action {
	h := e.he
	var items []*decItem
	if t.GroupAcc == nil {
		agg, err := t.Acc.Finalize()
		if err != nil {
			// A client whose upload broke off left part of its blocks in the
			// sum: the aggregate is unusable and the attempt starts over.
			return e.fail(t, rec, fmt.Errorf("encrypted sum: %w", err))
		}
		items = append(items, &decItem{purpose: e.purpose(t), agg: agg})
		// The record names what the ciphertext really sums.
		rec.Contributors = agg.Contributors
		if t.Influence != nil {
			for _, id := range agg.Contributors {
				p, err := t.Influence.FinalizeProduct(id)
				if err != nil {
					return e.fail(t, rec, fmt.Errorf("influence of %s: %w", id, err))
				}
				items = append(items, &decItem{purpose: aggregation.PurposeInfluence, coefficient: true, client: id, product: p})
			}
		}
	} else {
		var aggs []*aggregation.Aggregate
		for g, acc := range t.GroupAcc {
			if len(acc.Contributors()) == 0 && len(acc.Incomplete()) == 0 {
				continue
			}
			agg, err := acc.Finalize()
			if err != nil {
				return e.fail(t, rec, fmt.Errorf("encrypted sum of group %d: %w", g, err))
			}
			aggs = append(aggs, agg)
		}
		aggs, err := e.mergeSmallGroups(aggs)
		if err != nil {
			return e.fail(t, rec, err)
		}
		rec.Contributors = nil
		for g, agg := range aggs {
			items = append(items, &decItem{purpose: "group", agg: agg, group: g})
			rec.Contributors = append(rec.Contributors, agg.Contributors...)
		}
		sort.Strings(rec.Contributors)
	}
	h.collect, h.rec, h.queue, h.done, h.proj = t, rec, items, nil, nil
	return e.nextDecryption()
}

// mergeSmallGroups folds every aggregate of fewer than k clients into the
// smallest other one until all have at least k.
func (e *Engine) mergeSmallGroups(aggs []*aggregation.Aggregate) ([]*aggregation.Aggregate, error) {
	k := e.job.MinGroupSize
	for {
		sort.SliceStable(aggs, func(i, j int) bool { return len(aggs[i].Contributors) < len(aggs[j].Contributors) })
		if len(aggs) == 0 || len(aggs[0].Contributors) >= k {
			return aggs, nil
		}
		if len(aggs) == 1 {
			return nil, fmt.Errorf("only %d clients contributed, fewer than min_group_size %d", len(aggs[0].Contributors), k)
		}
		m, err := aggregation.MergeAggregates(e.he.params, aggs[0], aggs[1])
		if err != nil {
			return nil, fmt.Errorf("merging groups: %w", err)
		}
		aggs = append([]*aggregation.Aggregate{m}, aggs[2:]...)
	}
}

func (e *Engine) purpose(t *Task) string {
	if t.Kind == TaskMoments {
		return "moments"
	}
	return "round"
}

// nextDecryption starts on the next queued aggregate, or finishes the round
// when every one is decrypted.
func (e *Engine) nextDecryption() []Action {
	h := e.he
	if len(h.queue) == 0 {
		return e.finishDecrypted()
	}
	if h.queue[0].coefficient {
		return e.requestCoefficients()
	}
	h.agg, h.retry, h.attempts, h.skip, h.since = h.queue[0].agg, 0, 0, nil, 0
	return e.requestDecryption()
}

// coefBatch is the batch of influence scalars in flight: one decrypt task
// for every coefficient item at the head of the queue. items are the
// queued items it covers (published or not, in queue order); asked,
// reqs, seqs and products describe the published ones, in transcript
// order: the item's index, its request, its transcript position and its
// ciphertext (the task's "ciphertext/<i>").
type coefBatch struct {
	items    []*decItem
	asked    []int
	reqs     []aggregation.DecryptRequest
	seqs     []int
	products []*aggregation.Product
}

// maxBatchScalars bounds the requests of one batch task, so that the task
// fits the service's 4 MiB message (coordinator.MaxMessageBytes): a
// request names every live member, about 1.2 KB with a 64-member
// committee, so 1,024 of them are about 1.2 MB, leaving room for the
// transcript entries a member lacks. A round with more scalars (10 per
// client of 1,000) takes one task per 1,024.
const maxBatchScalars = 1024

// requestCoefficients asks every live committee member, in one task, for
// its shares of every influence scalar queued at the head (aggregation's
// CoefficientBatchVersion): each scalar is its own request and its own
// transcript entry, published one after the other, and a member verifies
// and admits them all and answers with all its shares and one signature of
// the batch's last head, or refuses the batch (aggregation.AdmitBatch says
// why whole). Any t answers combine each request; a member never answers
// twice for the same product, so there is no retry: with fewer than t
// answers the batch's scalars are missing and their clients are not valued
// in this round. A scalar the transcript forbids is left out of the batch
// (missing), the others are asked.
func (e *Engine) requestCoefficients() []Action {
	h := e.he
	n := 0
	for n < len(h.queue) && h.queue[n].coefficient && n < maxBatchScalars {
		n++
	}
	b := &coefBatch{items: h.queue[:n]}
	live := e.liveMembers()
	if len(live) < h.inst.Threshold() {
		for _, it := range b.items {
			it.missing = true
		}
		h.queue, h.done = h.queue[n:], append(h.done, b.items...)
		return append([]Action{ActLog{Msg: "influence scalars not requested: too few committee members live", Attrs: []any{"scalars", n}}}, e.nextDecryption()...)
	}
	var out []Action
	var entries map[string][][]byte
	task := &Task{
		Kind: TaskDecrypt, Round: h.collect.Round, Attempt: h.collect.Attempt,
		Deadline: e.now + e.job.Ticks(e.job.RoundTimeout),
		KeyID:    h.keyID, Coefficient: true,
		Submissions: h.collect.Submissions, Gradient: h.collect.Gradient,
		Gradients: map[[32]byte][]float64{},
	}
	for i, it := range b.items {
		grad := it.vector
		if grad == nil {
			grad = h.collect.Gradient
		}
		gd := aggregation.GradientDigest(grad)
		req := aggregation.NewInfluenceRequest(h.keyID, uint64(h.collect.Round), it.client, it.product.Digest, gd, live)
		req.Attempt = uint64(h.collect.Attempt)
		if err := h.ts.check(req); err != nil {
			// The members would refuse it (a scalar already released for
			// this client and round): the client is not valued this round.
			it.missing = true
			out = append(out, ActLog{Msg: "influence scalar not requested: the transcript forbids it", Attrs: []any{"client", it.client, "err", err.Error()}})
			continue
		}
		blob, err := req.MarshalBinary()
		if err != nil {
			panic(fmt.Sprintf("coordinator: marshal influence request: %v", err))
		}
		ents, persist, err := h.ts.publish(req)
		if err != nil {
			panic(fmt.Sprintf("coordinator: transcript entry of a checked request: %v", err))
		}
		if entries == nil {
			// What each member lacks before the batch's first entry; the
			// batch's own entries it makes from the requests.
			entries = ents
		}
		out = append(out, persist)
		b.asked, b.reqs, b.seqs, b.products = append(b.asked, i), append(b.reqs, req), append(b.seqs, persist.Transcript.Seq), append(b.products, it.product)
		task.Gradients[gd] = grad
		task.Batch = append(task.Batch, CoefficientRequest{Request: blob, Client: it.client, Gradient: gd, Ciphertext: fmt.Sprintf("ciphertext/%d", len(b.products)-1)})
	}
	if len(b.asked) == 0 {
		h.queue, h.done = h.queue[n:], append(h.done, b.items...)
		return append(out, e.nextDecryption()...)
	}
	h.batch, h.req = b, b.reqs[len(b.reqs)-1]
	h.shares, h.refusals = map[string]map[int][]byte{}, nil
	task.ID = fmt.Sprintf("%s/decrypt/influence/r%d/a%d/s%d", e.job.ID, h.collect.Round, h.collect.Attempt, b.seqs[0])
	task.Selected, task.Products, task.Transcript = h.req.Participants, b.products, entries
	e.task = task
	h.rec.DecryptTasks++
	return append(out, ActPublish{Task: e.task})
}

// endBatch closes the batch in flight: the scalars not decrypted are
// missing, and the queue moves past the batch.
func (e *Engine) endBatch() []Action {
	h := e.he
	b := h.batch
	h.batch = nil
	for _, it := range b.items {
		if !it.decrypted {
			it.missing = true
		}
	}
	h.queue, h.done = h.queue[len(b.items):], append(h.done, b.items...)
	return e.nextDecryption()
}

// requestDecryption publishes a decryption task for h.agg to t live members.
func (e *Engine) requestDecryption() []Action {
	h := e.he
	var live []string
	for _, id := range e.liveMembers() {
		if !h.skip[id] {
			live = append(live, id)
		}
	}
	t := h.inst.Threshold()
	if len(live) < t || h.attempts >= maxDecryptAttempts {
		collect, rec := h.collect, h.rec
		h.collect, h.agg, h.queue = nil, nil, nil
		if len(live) < t {
			// Not enough of the committee is left: the next attempt re-keys.
			h.ready = false
			return e.fail(collect, rec, fmt.Errorf("only %d of the %d-member committee are live, %d needed to decrypt; re-keying", len(live), len(h.members()), t))
		}
		return e.fail(collect, rec, fmt.Errorf("decryption failed %d times", h.attempts))
	}
	h.attempts++
	rng := e.rng(fmt.Sprintf("participants/%d/%d", len(h.done), h.attempts))
	// Members heard from since h.since (every member, on a first attempt)
	// come first, each tier in a seeded order: after a timeout, the members
	// that polled while it ran are the ones known to be there.
	var fresh, stale []string
	for _, id := range live {
		if e.clients[id].lastSeen >= h.since {
			fresh = append(fresh, id)
		} else {
			stale = append(stale, id)
		}
	}
	var order []string
	for _, tier := range [][]string{fresh, stale} {
		for _, p := range rng.Perm(len(tier)) {
			order = append(order, tier[p])
		}
	}
	participants := order[:t]
	item := h.queue[0]
	h.req = aggregation.NewDecryptRequest(h.agg, item.purpose, uint64(h.collect.Round), participants)
	h.req.Attempt, h.req.Retry = uint64(h.collect.Attempt), h.retry
	if err := h.ts.check(h.req); err != nil {
		// Honest members would refuse it (docs: the transcript's rules):
		// the attempt fails here rather than after asking them.
		collect, rec := h.collect, h.rec
		h.collect, h.agg, h.queue = nil, nil, nil
		return e.fail(collect, rec, fmt.Errorf("the committee would refuse to decrypt this %s aggregate: %w", item.purpose, err))
	}
	blob, err := h.req.MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("coordinator: marshal decryption request: %v", err))
	}
	entries, persist, err := h.ts.publish(h.req)
	if err != nil {
		panic(fmt.Sprintf("coordinator: transcript entry of a checked request: %v", err))
	}
	h.shares = map[string]map[int][]byte{}
	h.rec.DecryptTasks++
	e.task = &Task{
		ID:   fmt.Sprintf("%s/decrypt/%s/r%d/a%d/i%d/d%d", e.job.ID, item.purpose, h.collect.Round, h.collect.Attempt, len(h.done), h.attempts),
		Kind: TaskDecrypt, Round: h.collect.Round, Attempt: h.collect.Attempt,
		Deadline: e.now + e.job.Ticks(e.job.RoundTimeout), Selected: h.req.Participants,
		Blob: blob, Ciphertexts: h.agg.Ciphertexts, KeyID: h.keyID, Transcript: entries,
		// Members check the sum against the contributors' signed
		// ciphertexts; given the round's multiplier vector, they derive
		// each contributor's influence product in the same pass.
		Submissions: h.collect.Submissions, Gradient: h.collect.Gradient,
	}
	return []Action{persist, ActPublish{Task: e.task}}
}

// decryptTimeout: a participant did not answer. The aggregate is
// re-randomised (a fresh digest: members never serve one twice) and the
// request goes to the members that are live now.
func (e *Engine) decryptTimeout() []Action {
	h := e.he
	t := e.task
	e.endTask(EndedTimedOut)
	if t.Coefficient {
		out := []Action{ActLog{Msg: "influence scalars lost: fewer than t members answered", Attrs: []any{"task", t.ID, "scalars", len(h.batch.reqs), "answers", len(h.shares)}}}
		return append(out, e.endBatch()...)
	}
	var silent []string
	for _, id := range t.Selected {
		if len(h.shares[id]) < len(h.agg.Ciphertexts) {
			silent = append(silent, id)
			h.unresponsive[id] = true
			e.clients[id].silent = true
		}
	}
	// The retry prefers members heard from while this request was open:
	// a member that died without being asked has not polled since, and
	// after a long enough timeout is known not to be polling.
	h.since = t.Deadline - e.job.Ticks(e.job.RoundTimeout)
	e.markUnheard()
	out := []Action{ActLog{Msg: "decryption timed out", Attrs: []any{"task", t.ID, "silent", strings.Join(silent, ",")}}}
	return append(out, e.rerandomize()...)
}

// rerandomize gives the aggregate being decrypted a fresh digest (members
// never serve one twice) and asks the members that are live now. The
// encryption of zero added to the sum is derived from a public seed (the
// aggregate's key, purpose, round, attempt, contributors and the retry
// counter), not drawn: members recompute it and check that the retried
// ciphertext is still exactly the sum of the signed ones plus that zero,
// so a retry is no way to have them decrypt a c1 of the coordinator's
// choosing (issue 14, attack (b)). Each retry adds its zero to the
// original sum, not to the previous retry's.
func (e *Engine) rerandomize() []Action {
	h := e.he
	h.retry++
	fresh, err := h.enc.RerandomizeAggregate(h.queue[0].agg, h.queue[0].purpose, uint64(h.collect.Round), uint64(h.collect.Attempt), h.retry)
	if err != nil {
		panic(fmt.Sprintf("coordinator: re-randomise the %s aggregate: %v", h.queue[0].purpose, err))
	}
	h.agg = fresh
	return e.requestDecryption()
}

// decryptShares collects a participant's shares; with all t it combines
// them and moves on to the next queued aggregate.
func (e *Engine) decryptShares(ev EvShares) []Action {
	h := e.he
	if reason, ok := ev.Parts["refused"]; ok {
		return e.refused(ev, string(reason))
	}
	if e.task.Coefficient {
		return e.coefficientShares(ev)
	}
	blocks := len(h.agg.Ciphertexts)
	got := map[int][]byte{}
	for name, v := range ev.Parts {
		s, ok := strings.CutPrefix(name, "share/")
		if !ok {
			continue
		}
		b, err := strconv.Atoi(s)
		if err != nil || b < 0 || b >= blocks {
			return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Err: fmt.Errorf("%w: part %q names no block of %d", ErrBadEncoding, name, blocks)}}
		}
		got[b] = v
	}
	if len(got) != blocks {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Err: fmt.Errorf("%w: %d shares, want one per block (%d)", ErrBadEncoding, len(got), blocks)}}
	}
	if _, dup := h.shares[ev.Client]; dup {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Duplicate: true}}
	}
	persist, err := e.transcriptSignature(ev)
	if err != nil {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Err: err}}
	}
	h.shares[ev.Client] = got
	out := []Action{persist, ActReply{Client: ev.Client, TaskID: ev.TaskID}}
	if len(h.shares) < len(h.req.Participants) {
		return out
	}
	e.endTask(EndedCompleted)
	vals := make([][]float64, blocks)
	for b := range blocks {
		per := map[string][]byte{}
		for id, s := range h.shares {
			per[id] = s[b]
		}
		v, err := h.decryptor.CombineBlock(h.req, b, h.agg.Ciphertexts[b], per)
		if err != nil {
			// A bad share: treat the sender set as unreliable and retry.
			out = append(out, ActLog{Msg: "combining decryption shares failed", Attrs: []any{"err", err.Error()}})
			return append(out, e.requestDecryption()...)
		}
		vals[b] = v
	}
	h.ts.done()
	item := h.queue[0]
	h.rec.Decryptions = append(h.rec.Decryptions, DecryptionRecord{Purpose: h.req.Purpose, Contributors: len(h.req.Contributors), Clients: h.req.Contributors, Participants: h.req.Participants})
	if item.values, item.weight, err = aggregation.Assemble(h.collect.Length, vals); err != nil {
		collect, rec := h.collect, h.rec
		h.collect, h.agg, h.queue = nil, nil, nil
		return append(out, e.fail(collect, rec, err)...)
	}
	out = append(out, e.released(h.ts.pending, item.values, item.weight))
	h.queue, h.done = h.queue[1:], append(h.done, item)
	return append(out, e.nextDecryption()...)
}

// refused handles a participant's refusal to decrypt (its policy said no:
// a digest it already served, an influence scalar it already released).
// Waiting for the deadline would gain nothing: a whole decryption is
// retried at once without it, and an influence scalar that can no longer
// get t answers is given up.
func (e *Engine) refused(ev EvShares, reason string) []Action {
	h := e.he
	t := e.task
	out := []Action{
		ActReply{Client: ev.Client, TaskID: ev.TaskID},
		ActLog{Msg: "committee member refused to decrypt", Attrs: []any{"member", ev.Client, "task", t.ID, "reason", reason}},
	}
	if h.refusals == nil {
		h.refusals = map[string]bool{}
	}
	if h.refusals[ev.Client] {
		return out[:1]
	}
	h.refusals[ev.Client] = true
	if t.Coefficient {
		if len(t.Selected)-len(h.refusals) >= h.inst.Threshold() {
			return out
		}
		e.endTask(EndedGivenUp)
		return append(out, e.endBatch()...)
	}
	// A whole decryption names exactly t participants: without this one it
	// cannot finish. Ask again, re-randomised, without the refuser.
	e.endTask(EndedGivenUp)
	if h.skip == nil {
		h.skip = map[string]bool{}
	}
	h.skip[ev.Client] = true
	return append(out, e.rerandomize()...)
}

// coefficientShares collects a member's answer to a batch: one share per
// request ("coefficients/<i>", in the batch's order) and its signature of
// the batch's last head. An answer that lacks a request's share is refused
// whole (a member answers all of a batch or refuses it). With t answers
// every request is combined on its own; one whose shares do not combine is
// missing, the others are not.
func (e *Engine) coefficientShares(ev EvShares) []Action {
	h := e.he
	b := h.batch
	got := make(map[int][]byte, len(b.reqs))
	for name, v := range ev.Parts {
		s, ok := strings.CutPrefix(name, "coefficients/")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(s)
		if err != nil || i < 0 || i >= len(b.reqs) || len(v) == 0 {
			return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Err: fmt.Errorf("%w: part %q names no request of the batch's %d", ErrBadEncoding, name, len(b.reqs))}}
		}
		got[i] = v
	}
	if len(got) != len(b.reqs) {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Err: fmt.Errorf("%w: %d coefficient shares, want one per request of the batch (%d)", ErrBadEncoding, len(got), len(b.reqs))}}
	}
	if _, dup := h.shares[ev.Client]; dup {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Duplicate: true}}
	}
	persist, err := e.transcriptSignature(ev)
	if err != nil {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Err: err}}
	}
	h.shares[ev.Client] = got
	out := []Action{persist, ActReply{Client: ev.Client, TaskID: ev.TaskID}}
	if len(h.shares) < h.inst.Threshold() {
		return out
	}
	e.endTask(EndedCompleted)
	var answered []string
	for id := range h.shares {
		answered = append(answered, id)
	}
	sort.Strings(answered)
	var buf []byte
	for j, i := range b.asked {
		it, req := b.items[i], b.reqs[j]
		per := make(map[string][]byte, len(h.shares))
		for id, s := range h.shares {
			per[id] = s[j]
		}
		// One product at a time is read back into the same buffer: the
		// batch's products are in the spill file, not in the heap.
		ct, err := it.product.Read(buf)
		var a float64
		if err == nil {
			buf = ct
			a, err = h.decryptor.CombineCoefficient(req, ct, per)
		}
		if err != nil {
			out = append(out, ActLog{Msg: "influence scalar lost: shares do not combine", Attrs: []any{"client", it.client, "err", err.Error()}})
		} else {
			it.scalar, it.decrypted = a, true
			h.ts.doneAt(b.seqs[j])
			out = append(out, e.released(b.seqs[j], []float64{a}, 0))
		}
		h.rec.Decryptions = append(h.rec.Decryptions, DecryptionRecord{Purpose: aggregation.PurposeInfluence, Contributors: 1, Clients: []string{it.client}, Participants: answered,
			Gradient: hex.EncodeToString(req.Gradient[:])})
	}
	return append(out, e.endBatch()...)
}

// finishDecrypted uses the decrypted aggregates: feature scaling, or the
// next global model and the round's valuation.
func (e *Engine) finishDecrypted() []Action {
	h := e.he
	if h.collect != nil && h.collect.Kind == TaskTrain && h.collect.Kept != nil {
		// A projection round: once the total is decrypted, the products
		// with the vectors built from it are decrypted next.
		if out, ok := e.startProjection(); ok {
			return out
		}
	}
	collect, rec, items := h.collect, h.rec, h.done
	h.collect, h.agg, h.queue, h.done = nil, nil, nil, nil
	var err error
	switch {
	case collect.Kind == TaskMoments:
		it := items[0]
		sum := make([]float64, len(it.values))
		for i, v := range it.values {
			// Every client encrypts its moments with weight 1, so the
			// total weight is the number of clients and avg·weight the sum.
			sum[i] = v * it.weight
		}
		// The noise floor of that sum: every contributor's encryption,
		// the flooding of the t shares that decrypted it, and the
		// float64 round-off of encoding and decoding, which grows with
		// the moments' magnitude (large sums of squares beside an
		// all-zero feature); the weight slot adds 1 to each
		// contributor's vector and their number to the sum.
		c := len(rec.Contributors)
		err = e.setScaler(sum, func(m dataset.Moments) float64 {
			squares := m.FlatSquaresBound() + float64(c+c*c)
			return h.params.SlotNoiseSigmaAt(c, len(h.inst.Members()), h.inst.Threshold(), squares)
		})
	case collect.GroupAcc != nil:
		// The groups partition the contributors: the round's FedAvg is the
		// weighted mean of the group means.
		var total float64
		mean := make([]float64, collect.Length)
		for g, it := range items {
			e.checkDecryptedWeight(&rec, fmt.Sprintf("group %d", g+1), it.agg.Contributors, it.weight)
			total += it.weight
			for i, v := range it.values {
				mean[i] += it.weight * v
			}
		}
		next := slices.Clone(e.global)
		for i := range mean {
			next[i] += mean[i] / total
		}
		e.valueGroups(&rec, collect, items)
		err = e.advance(&rec, next)
	default:
		e.checkDecryptedWeight(&rec, "the round's sum", rec.Contributors, items[0].weight)
		next := slices.Clone(e.global)
		for i, v := range items[0].values {
			next[i] += v
		}
		if collect.Influence != nil {
			e.valueInfluence(&rec, collect, items[0].values, items[1:])
		}
		if collect.Kept != nil && h.proj != nil {
			e.valueProjection(&rec, collect, items[1:])
		}
		h.proj = nil
		err = e.advance(&rec, next)
	}
	if err != nil {
		return e.fail(collect, rec, err)
	}
	return e.succeed(collect, rec)
}

// valueGroups scores the round over its decrypted group sums and shares
// each group's value among its members by their public weights n_i.
func (e *Engine) valueGroups(rec *RoundRecord, t *Task, items []*decItem) {
	cfg := e.job.Valuation
	rv := &RoundValuation{Mode: cfg.Mode, Method: cfg.Method, Values: map[string]float64{}, StdErr: map[string]float64{}}
	rec.Valuation = rv
	updates, weights := make([][]float64, len(items)), make([]float64, len(items))
	for g, it := range items {
		rv.Groups = append(rv.Groups, it.agg.Contributors)
		updates[g], weights[g] = it.values, it.weight
	}
	res, err := e.valuer.Game(t.Round, e.global, e.known, updates, weights, e.scaler)
	if err == nil {
		err = e.splitGroups(rv, res, func(id string) float64 { return float64(rec.Samples[id]) })
	}
	rv.Evaluations = res.Evaluations
	if err != nil {
		rv.Error = err.Error()
	}
}

// valueInfluence scores the round on the first-order surrogate game from
// the decrypted influence scalars a_i and the public weights n_i. A client
// whose scalar is missing is left out of this round's game.
func (e *Engine) valueInfluence(rec *RoundRecord, t *Task, total []float64, items []*decItem) {
	cfg := e.job.Valuation
	rv := &RoundValuation{Mode: cfg.Mode, Method: cfg.Method, Values: map[string]float64{}, StdErr: map[string]float64{}}
	rec.Valuation = rv
	var ids []string
	var a, w []float64
	for _, it := range items {
		if it.missing {
			continue
		}
		ids, a, w = append(ids, it.client), append(a, it.scalar), append(w, float64(rec.Samples[it.client]))
	}
	if len(ids) == 0 {
		rv.Error = "no influence scalar could be decrypted"
		return
	}
	res, err := e.surrogateAsOne(rv, t, ids, total, a, w)
	if err != nil {
		rv.Error = err.Error()
		return
	}
	rv.Evaluations = res.Evaluations
}
