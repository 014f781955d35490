package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/manifest"
)

// Limits of the secure-aggregation protocol steps.
const (
	// maxKeyGenAttempts bounds consecutive failed key generations before
	// the job stops: each one needs every committee member to answer.
	maxKeyGenAttempts = 5
	// maxDecryptAttempts bounds the decryptions of one aggregate; each
	// retry re-randomises the ciphertexts (members never serve a digest
	// twice) and asks the members that are live now.
	maxDecryptAttempts = 3
)

// heState is the engine's part of multiparty CKKS: the committee, its key,
// and the decryption in progress.
type heState struct {
	params aggregation.Parameters

	epoch     uint64
	failedKGs int
	inst      *aggregation.KeyGenInstance
	commits   map[string][]byte            // member → its signed commitment (keygen)
	pkShares  map[string][]byte            // member → its revealed public-key share (reveal)
	sealed    map[string]map[string][]byte // recipient → sender → sealed
	acks      map[string]bool
	keySigs   map[string][]byte // member → its signature of pk (threshold)
	pk        []byte
	pkDigest  [32]byte // SHA-256 of pk, which the members sign
	cert      []byte   // aggregation.KeyCertificate of pk, once every member signed
	keyID     [32]byte
	ready     bool
	enc       *aggregation.Encryptor // for re-randomising aggregates on retry (a public zero)
	decryptor *aggregation.Decryptor
	// unresponsive members of the current committee, not asked again.
	unresponsive map[string]bool

	// The decryption in progress: the queue of aggregates of the collect
	// task still to decrypt (the head is being decrypted), and those done.
	collect  *Task
	rec      RoundRecord
	queue    []*decItem
	done     []*decItem
	agg      *aggregation.Aggregate // the head's current (re-randomised) form
	retry    uint32                 // how many times agg was re-randomised from the head's sum
	req      aggregation.DecryptRequest
	shares   map[string]map[int][]byte // member → block → share
	refusals map[string]bool           // members whose policy refused this request
	skip     map[string]bool           // members not to ask again for this aggregate
	attempts int
	// batch is the batch of influence scalars in flight (decrypt.go).
	batch *coefBatch
	// since is the tick from which a member must have been heard to be
	// preferred as a participant (the last timed-out request's start).
	since int

	// proj is a projection round's second phase (projection.go), nil
	// before the total is decrypted.
	proj *projState

	// ts is the job's decryption transcript (transcript.go), kept across
	// committees.
	ts *transcriptState
}

// members returns the current committee's ids.
func (h *heState) members() []string {
	if h.inst == nil {
		return nil
	}
	var ids []string
	for _, m := range h.inst.Members() {
		ids = append(ids, m.ID)
	}
	return ids
}

// liveMembers are the committee members that polled recently and have not
// failed to answer a protocol step.
func (e *Engine) liveMembers() []string {
	var out []string
	for _, id := range e.he.members() {
		if e.live(id) && !e.he.unresponsive[id] {
			out = append(out, id)
		}
	}
	return out
}

// keyUsable: a collective key exists and at least t of its committee are live.
func (e *Engine) keyUsable() bool {
	return e.he.ready && len(e.liveMembers()) >= e.he.inst.Threshold()
}

// seedBytes derives the committee seed from the job seed and a purpose.
func (e *Engine) seedBytes(purpose string) []byte {
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], e.job.Seed)
	h.Write(b[:])
	h.Write([]byte(purpose))
	return h.Sum(nil)
}

// startKeyGen draws a committee from the live clients with the job seed
// and asks its members for their key-generation shares.
func (e *Engine) startKeyGen() []Action {
	h := e.he
	if h.failedKGs >= maxKeyGenAttempts {
		return []Action{e.done(fmt.Sprintf("key generation failed %d times in a row", h.failedKGs))}
	}
	var candidates []string
	for _, id := range e.available() {
		if c := e.clients[id]; len(c.identity) > 0 && len(c.signing) > 0 && !h.unresponsive[id] {
			candidates = append(candidates, id)
		}
	}
	size := min(e.job.Committee.Size, len(candidates))
	t := min(e.job.Committee.Threshold, size)
	if size < 2 || t < 2 {
		return []Action{ActLog{Msg: "waiting for clients to form a decryption committee", Attrs: []any{"live", len(candidates)}}}
	}
	var drawn []string
	if seed := e.job.Committee.Seed; len(seed) > 0 {
		// The manifest's rule: a client checks the committee it is shown
		// against it, and refuses one of another size.
		if size < e.job.Committee.Threshold {
			return []Action{ActLog{Msg: "waiting for clients to form the manifest's decryption committee", Attrs: []any{"live", len(candidates), "threshold", e.job.Committee.Threshold}}}
		}
		h.epoch++
		drawn = manifest.DrawCommittee(seed, h.epoch, candidates, size)
	} else {
		h.epoch++
		rng := e.rng(fmt.Sprintf("committee/%d", h.epoch))
		perm := rng.Perm(len(candidates))[:size]
		sort.Ints(perm)
		for _, p := range perm {
			drawn = append(drawn, candidates[p])
		}
	}
	c := aggregation.Committee{Job: e.job.ID, Seed: e.seedBytes("crp"), Epoch: h.epoch, Threshold: t}
	for _, id := range drawn {
		c.Members = append(c.Members, aggregation.MemberInfo{ID: id, PublicKey: e.clients[id].identity, SigningKey: e.clients[id].signing})
	}
	inst, err := aggregation.NewKeyGenInstance(h.params, c)
	if err != nil {
		// A client's identity key is checked at enrolment; anything else
		// wrong here is a bug in how the committee was assembled.
		h.failedKGs++
		return []Action{ActLog{Msg: "committee rejected", Attrs: []any{"epoch", h.epoch, "err", err.Error()}}}
	}
	blob, err := inst.MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("coordinator: marshal key-generation instance: %v", err))
	}
	h.inst, h.ready, h.pk, h.cert, h.enc, h.decryptor = inst, false, nil, nil, nil, nil
	h.commits, h.pkShares, h.sealed, h.acks, h.keySigs = map[string][]byte{}, map[string][]byte{}, map[string]map[string][]byte{}, map[string]bool{}, map[string][]byte{}
	h.unresponsive = map[string]bool{}
	members := h.members()
	e.task = &Task{
		ID: fmt.Sprintf("%s/keygen/e%d", e.job.ID, h.epoch), Kind: TaskKeyGen, Round: e.round, Attempt: int(h.epoch),
		Deadline: e.now + e.job.Ticks(e.job.RoundTimeout), Selected: members, Blob: blob,
	}
	return []Action{
		ActLog{Msg: "decryption committee drawn", Attrs: []any{"epoch", h.epoch, "size", size, "threshold", t, "members", strings.Join(members, ",")}},
		ActPublish{Task: e.task},
	}
}

// keyGenTimeout: a member did not answer. Key generation needs all of
// them, so the committee is drawn again without the silent ones.
func (e *Engine) keyGenTimeout() []Action {
	h := e.he
	t := e.task
	e.endTask(EndedTimedOut)
	var silent []string
	for _, id := range t.Selected {
		if (t.Kind == TaskKeyGen && h.commits[id] == nil) || (t.Kind == TaskReveal && h.pkShares[id] == nil) || (t.Kind == TaskThreshold && !h.acks[id]) {
			silent = append(silent, id)
		}
	}
	h.failedKGs++
	// The silent clients are left out of the next draw only: startKeyGen
	// resets the exclusions once it has drawn, since they may come back.
	for _, id := range silent {
		h.unresponsive[id] = true
		e.clients[id].silent = true
	}
	out := []Action{ActLog{Msg: "key generation timed out; drawing a new committee", Attrs: []any{"epoch", h.epoch, "silent", strings.Join(silent, ",")}}}
	return append(out, e.startKeyGen()...)
}

// shares handles a member's protocol messages.
func (e *Engine) shares(ev EvShares) []Action {
	reply := func(err error) []Action {
		return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Err: err}}
	}
	if c, ok := e.clients[ev.Client]; ok {
		c.answered(e.now)
	}
	t := e.task
	if e.he == nil || t == nil || t.ID != ev.TaskID {
		return reply(fmt.Errorf("%w: %q", ErrNoTask, ev.TaskID))
	}
	if !t.isSelected(ev.Client) {
		return reply(ErrNotSelected)
	}
	h := e.he
	switch t.Kind {
	case TaskKeyGen:
		// Commit: each member's signed commitment to its public-key share.
		// The engine checks it against the identity key the instance
		// lists, so that a broken member is named here; the members check
		// it again against their pinned keys before they reveal.
		raw := ev.Parts["commitment"]
		if len(raw) == 0 {
			return reply(fmt.Errorf("%w: no commitment part", ErrBadEncoding))
		}
		if _, dup := h.commits[ev.Client]; dup {
			return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Duplicate: true}}
		}
		if _, err := h.inst.VerifyCommitment(nil, ev.Client, raw); err != nil {
			return reply(fmt.Errorf("%w: %w", ErrBadEncoding, err))
		}
		h.commits[ev.Client] = raw
		out := reply(nil)
		if len(h.commits) < len(t.Selected) {
			return out
		}
		e.endTask(EndedCompleted)
		e.task = &Task{
			ID: fmt.Sprintf("%s/reveal/e%d", e.job.ID, h.epoch), Kind: TaskReveal, Round: e.round, Attempt: int(h.epoch),
			Deadline: e.now + e.job.Ticks(e.job.RoundTimeout), Selected: t.Selected, Blob: t.Blob, Commitments: h.commits,
		}
		return append(out, ActPublish{Task: e.task})
	case TaskReveal:
		pks := ev.Parts["public-key-share"]
		if len(pks) == 0 {
			return reply(fmt.Errorf("%w: no public-key-share part", ErrBadEncoding))
		}
		sealed := map[string][]byte{}
		for name, v := range ev.Parts {
			if to, ok := strings.CutPrefix(name, "sealed/"); ok {
				if !slices.Contains(t.Selected, to) || to == ev.Client {
					return reply(fmt.Errorf("%w: sealed share for %q, who is not another committee member", ErrBadEncoding, to))
				}
				sealed[to] = v
			}
		}
		if len(sealed) != len(t.Selected)-1 {
			return reply(fmt.Errorf("%w: %d sealed shares, want one for each of the %d other members", ErrBadEncoding, len(sealed), len(t.Selected)-1))
		}
		if _, dup := h.pkShares[ev.Client]; dup {
			return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Duplicate: true}}
		}
		// A share that is not the one committed to (one chosen after
		// seeing the others) is refused; every member checks it too.
		if err := h.inst.CheckRevealedShare(ev.Client, h.commits[ev.Client], pks); err != nil {
			return reply(fmt.Errorf("%w: %w", ErrBadEncoding, err))
		}
		h.pkShares[ev.Client] = pks
		for to, v := range sealed {
			if h.sealed[to] == nil {
				h.sealed[to] = map[string][]byte{}
			}
			h.sealed[to][ev.Client] = v
		}
		out := reply(nil)
		if len(h.pkShares) < len(t.Selected) {
			return out
		}
		pk, err := aggregation.AggregatePublicKey(h.params, h.inst, h.pkShares)
		if err != nil {
			// A bad share cannot be attributed without more protocol; start over.
			e.endTask(EndedGivenUp)
			h.failedKGs++
			out = append(out, ActLog{Msg: "public key aggregation failed; drawing a new committee", Attrs: []any{"err", err.Error()}})
			return append(out, e.startKeyGen()...)
		}
		h.pk, h.pkDigest = pk, sha256.Sum256(pk)
		e.endTask(EndedCompleted)
		e.task = &Task{
			ID: fmt.Sprintf("%s/threshold/e%d", e.job.ID, h.epoch), Kind: TaskThreshold, Round: e.round, Attempt: int(h.epoch),
			Deadline: e.now + e.job.Ticks(e.job.RoundTimeout), Selected: t.Selected, Sealed: h.sealed,
			Blob: t.Blob, Commitments: h.commits, PublicKeyShares: h.pkShares,
		}
		return append(out, ActPublish{Task: e.task})
	case TaskThreshold:
		if _, ok := ev.Parts["ack"]; !ok {
			return reply(fmt.Errorf("%w: no ack part", ErrBadEncoding))
		}
		if h.acks[ev.Client] {
			return []Action{ActReply{Client: ev.Client, TaskID: ev.TaskID, Duplicate: true}}
		}
		// The member aggregated the key itself from the shares it checked
		// against their commitments; its signature must be of this key.
		if err := h.inst.VerifyKeySignature(nil, ev.Client, h.pkDigest, ev.Parts["public-key-signature"]); err != nil {
			return reply(fmt.Errorf("%w: %w", ErrBadEncoding, err))
		}
		h.acks[ev.Client] = true
		h.keySigs[ev.Client] = ev.Parts["public-key-signature"]
		out := reply(nil)
		if len(h.acks) < len(t.Selected) {
			return out
		}
		keyID, err := aggregation.PublicKeyInstance(h.params, h.pk)
		if err == nil {
			h.enc, err = aggregation.NewEncryptor(h.params, h.pk, 1)
		}
		if err == nil {
			h.decryptor, err = aggregation.NewDecryptor(h.params, h.inst)
		}
		if err == nil {
			h.cert, err = (&aggregation.KeyCertificate{Instance: h.inst, Signatures: h.keySigs}).MarshalBinary()
		}
		if err != nil {
			panic(fmt.Sprintf("coordinator: collective key unusable after a complete key generation: %v", err))
		}
		h.keyID, h.ready, h.failedKGs = keyID, true, 0
		e.endTask(EndedCompleted)
		out = append(out, ActPersist{Committee: &CommitteeRecord{Epoch: h.epoch, Instance: mustMarshal(h.inst), PublicKey: h.pk, Certificate: h.cert}})
		out = append(out, ActLog{Msg: "collective public key ready, signed by every member", Attrs: []any{"epoch", h.epoch, "key", fmt.Sprintf("%x", keyID[:8])}})
		return append(out, e.maybeStart()...)
	case TaskDecrypt:
		return e.decryptShares(ev)
	}
	return reply(fmt.Errorf("%w: task %s takes updates, not shares", ErrNoTask, t.ID))
}

// attachAccumulator makes a train or moments task collect ciphertexts:
// one accumulator for the total, or in the groups valuation mode one per
// group of a seeded partition of the selected clients.
func (e *Engine) attachAccumulator(t *Task) error {
	t.KeyID, t.PublicKey, t.KeyCertificate = e.he.keyID, e.he.pk, e.he.cert
	t.Submissions = e.newSubmissionStore()
	if t.Kind == TaskTrain && e.valuer != nil && e.job.Valuation.Mode == ModeGroups {
		t.Groups = partition(t.Selected, e.job.MinGroupSize, e.job.Seed, t.Round, t.Attempt)
		t.GroupAcc = make([]*aggregation.Accumulator, len(t.Groups))
		t.groupOf = map[string]int{}
		for g, members := range t.Groups {
			acc, err := aggregation.NewAccumulator(e.he.params, e.he.keyID, t.Length)
			if err != nil {
				return err
			}
			t.GroupAcc[g] = acc
			for _, id := range members {
				t.groupOf[id] = g
			}
		}
		return nil
	}
	acc, err := aggregation.NewAccumulator(e.he.params, e.he.keyID, t.Length)
	if err != nil {
		return err
	}
	t.Acc = acc
	if t.Kind == TaskTrain && e.valuer != nil && e.job.Valuation.Mode == ModeInfluence {
		g, err := e.valuer.Gradient(e.global, e.known, e.scaler)
		if err != nil {
			return err
		}
		if t.Influence, err = aggregation.NewInfluence(e.he.params, e.he.keyID, g, t.Length); err != nil {
			return err
		}
		// Each client's product is finished with its last block and kept
		// in the task's spill file (when the store has one) until the
		// members download it: in the heap it was 786 KB a client (LogN
		// 14) from upload to decryption (issue 19).
		t.Influence.SpillTo(t.Submissions)
		t.Gradient = g
	}
	if t.Kind == TaskTrain && e.valuer != nil && e.job.Valuation.Mode == ModeProjection {
		// In the task's spill file too (when the store has one), until
		// the products are computed after the total's decryption: in the
		// heap every client's whole update stayed there (issue 19).
		t.Kept = NewCiphertextStore(acc.Blocks(), t.Submissions)
	}
	return nil
}

func mustMarshal(inst *aggregation.KeyGenInstance) []byte {
	b, err := inst.MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("coordinator: marshal key-generation instance: %v", err))
	}
	return b
}

// restore takes up a committee whose key generation completed before a
// restart. Its members still hold their key shares, unless they restarted
// too; then decryption times out and the job re-keys.
func (h *heState) restore(c CommitteeRecord) error {
	inst, err := aggregation.UnmarshalKeyGenInstance(h.params, c.Instance)
	if err != nil {
		return fmt.Errorf("coordinator: stored committee: %w", err)
	}
	keyID, err := aggregation.PublicKeyInstance(h.params, c.PublicKey)
	if err != nil {
		return fmt.Errorf("coordinator: stored public key: %w", err)
	}
	enc, err := aggregation.NewEncryptor(h.params, c.PublicKey, 1)
	if err != nil {
		return err
	}
	dec, err := aggregation.NewDecryptor(h.params, inst)
	if err != nil {
		return err
	}
	// The stored key is served only with the members' signatures, which
	// are checked here as a client would (against the listed keys).
	if _, err := aggregation.VerifyPublicKey(h.params, c.PublicKey, c.Certificate, nil); err != nil {
		return fmt.Errorf("coordinator: stored public key: %w", err)
	}
	h.inst, h.pk, h.cert, h.keyID, h.enc, h.decryptor, h.epoch, h.ready = inst, c.PublicKey, c.Certificate, keyID, enc, dec, c.Epoch, true
	h.unresponsive = map[string]bool{}
	return nil
}
