package client

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/tallyfl/tally/aggregation"
	"github.com/tallyfl/tally/ledger"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// ErrReceiptChain: the coordinator's receipts rewrite or fork the chain
// this client kept: a receipt for a sequence number already kept with
// another hash, a second receipt for a round already receipted, a receipt
// right after the last one kept that does not chain from it, or a
// receipts file not signed by the key the client checks receipts with.
var ErrReceiptChain = errors.New("client: the coordinator's receipts rewrite the chain this client kept")

// ErrTranscriptHead: the coordinator's decryption transcript does not hold
// for this client: entries that do not extend the chain it saw, are
// signed wrongly or break the rules, a receipt whose transcript head is
// not on that chain, or a decryption a receipt lists that the chain does
// not have.
var ErrTranscriptHead = errors.New("client: the coordinator's decryption transcript does not extend the one this client saw")

// receiptBook is the client's own copy of its receipts: each one is
// checked (the coordinator's signature, this client's id, the digest of
// what this client submitted that round, and that it extends the receipts
// kept rather than rewriting them) before it is appended, as a JSON line,
// to the receipts file.
type receiptBook struct {
	path string
	pub  ed25519.PublicKey
	// kept are the receipts in the file, in order; bySeq and byRound
	// index their hashes.
	kept    []ledger.Receipt
	bySeq   map[uint64]string
	byRound map[string]string // roundKey → hash
	lastSeq uint64
	// digests holds the hex SHA-256 of this client's latest submission per round.
	digests map[int]string
}

// syncReceipts fetches receipts issued since the last one kept.
func (c *Client) syncReceipts(ctx context.Context) error {
	if c.book == nil || c.book.pub == nil {
		return nil
	}
	req := &tallyv1.ReceiptsRequest{AfterSeq: c.book.lastSeq}
	if c.observed != nil {
		req.TranscriptAfter = uint64(c.observed.Len())
	}
	resp, err := c.api.Receipts(ctx, req)
	if err != nil {
		return err
	}
	if err := c.observeTranscript(resp.GetTranscriptEntries()); err != nil {
		return err
	}
	return c.keepReceipts(resp.GetReceipts())
}

// observeTranscript extends the chain this client saw with entries the
// coordinator sent: they must extend it, carry valid signatures and pass
// the members' rules (this client's own update among the contributors
// included), and the chain must still hold every transcript head of the
// receipts kept and, for a committee member, the member's own head.
func (c *Client) observeTranscript(raw [][]byte) error {
	if len(raw) == 0 || c.job == nil {
		return nil
	}
	entries, err := transcriptEntries("receipts", raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTranscriptHead, err)
	}
	if c.observed == nil {
		c.observed = aggregation.NewTranscript(c.job.GetJobId())
	}
	keys := c.cfg.MemberKeys
	lookup := func(id string) (ed25519.PublicKey, bool) {
		if keys == nil {
			return nil, false
		}
		return keys.IdentityKey(id)
	}
	if err := c.observed.Extend(entries, c.policy, lookup, keys == nil); err != nil {
		c.log.Error("THE COORDINATOR'S DECRYPTION TRANSCRIPT DOES NOT HOLD; this client stops trusting it", "err", err)
		return fmt.Errorf("%w: %w", ErrTranscriptHead, err)
	}
	if c.member != nil {
		if n, head := c.member.TranscriptHead(c.job.GetJobId()); n > 0 && n <= c.observed.Len() {
			if e, _ := c.observed.Entry(n - 1); e.Head() != head {
				c.log.Error("THE COORDINATOR SHOWS CLIENTS ANOTHER DECRYPTION TRANSCRIPT THAN THIS MEMBER SIGNED", "position", n, "member_head", hex.EncodeToString(head[:]))
				return fmt.Errorf("%w: entry %d of the chain the receipts name has head %x, this member holds %x", ErrTranscriptHead, n-1, e.Head(), head)
			}
		}
	}
	if c.book != nil {
		for _, r := range c.book.kept {
			if uint64(c.observed.Len()) < r.TranscriptLen {
				continue
			}
			if err := c.checkTranscriptHead(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTranscriptHead checks a receipt's transcript head and decryptions
// against the chain this client saw.
func (c *Client) checkTranscriptHead(r ledger.Receipt) error {
	if r.TranscriptHead == "" {
		return nil
	}
	if c.observed == nil || uint64(c.observed.Len()) < r.TranscriptLen || r.TranscriptLen == 0 {
		have := 0
		if c.observed != nil {
			have = c.observed.Len()
		}
		// Not evidence yet: the entries up to the head have not arrived
		// (a failed fetch); the receipt is not kept until they have.
		return fmt.Errorf("client: receipt seq %d (round %d) names transcript entry %d, the coordinator sent %d so far; not kept until the entries arrive", r.Seq, r.Round, r.TranscriptLen, have)
	}
	e, _ := c.observed.Entry(int(r.TranscriptLen) - 1)
	if h := e.Head(); hex.EncodeToString(h[:]) != r.TranscriptHead {
		c.log.Error("A RECEIPT'S TRANSCRIPT HEAD IS NOT ON THE CHAIN THIS CLIENT SAW", "seq", r.Seq, "round", r.Round, "head", r.TranscriptHead)
		return fmt.Errorf("%w: receipt seq %d (round %d) has head %s at %d entries, the chain has %x", ErrTranscriptHead, r.Seq, r.Round, r.TranscriptHead, r.TranscriptLen, h)
	}
	for i, d := range r.Decrypted {
		if d.Status == "" {
			continue
		}
		e, ok := c.observed.Entry(int(d.Seq))
		if !ok || hex.EncodeToString(e.Request[:]) != d.Request || int(e.Round) != d.Round || int(e.Attempt) != d.Attempt ||
			e.Purpose != d.Purpose || len(e.Contributors) != d.Contributors || entryGradient(e) != d.Gradient {
			return fmt.Errorf("%w: receipt seq %d decryption %d (entry %d, %s round %d attempt %d) is not the transcript's entry %d", ErrTranscriptHead, r.Seq, i, d.Seq, d.Purpose, d.Round, d.Attempt, d.Seq)
		}
	}
	return nil
}

// lastSeq is the sequence number of the last receipt kept.
func (c *Client) lastSeq() uint64 {
	if c.book == nil {
		return 0
	}
	return c.book.lastSeq
}

// useKey sets the key receipts are checked with, and checks the receipts
// already kept against it: a file whose receipts another key signed is a
// chain re-signed (or another job's file), and is refused, not extended.
func (b *receiptBook) useKey(pub ed25519.PublicKey) error {
	if pub == nil {
		return nil
	}
	b.pub = pub
	for i, r := range b.kept {
		if err := ledger.VerifyClientReceipts([]ledger.Receipt{r}, pub, r.Client, nil); err != nil {
			return fmt.Errorf("%w: %s line %d (seq %d): %v; the receipt key is %s", ErrReceiptChain, b.path, i+1, r.Seq, err, ledger.FormatPublicKey(pub))
		}
	}
	return nil
}

// extend checks that r extends the kept receipts. It returns false for a
// receipt already kept (a resend), which is skipped.
func (b *receiptBook) extend(r ledger.Receipt) (bool, error) {
	if h, ok := b.bySeq[r.Seq]; ok {
		if h != r.Hash {
			return false, fmt.Errorf("%w: seq %d has hash %s in %s, the coordinator now sends %s", ErrReceiptChain, r.Seq, h, b.path, r.Hash)
		}
		return false, nil
	}
	if h, ok := b.byRound[roundKey(r)]; ok && h != r.Hash {
		return false, fmt.Errorf("%w: round %d was receipted as %s in %s, the coordinator now sends seq %d, %s", ErrReceiptChain, r.Round, h, b.path, r.Seq, r.Hash)
	}
	if r.Seq < b.lastSeq {
		return false, fmt.Errorf("%w: seq %d is before the last one kept, %d, and not in %s", ErrReceiptChain, r.Seq, b.lastSeq, b.path)
	}
	if n := len(b.kept); n > 0 && r.Seq == b.lastSeq+1 && r.PrevHash != b.kept[n-1].Hash {
		return false, fmt.Errorf("%w: seq %d chains from %s, the last receipt kept (seq %d) is %s", ErrReceiptChain, r.Seq, r.PrevHash, b.lastSeq, b.kept[n-1].Hash)
	}
	return true, nil
}

func (b *receiptBook) add(r ledger.Receipt) {
	b.kept = append(b.kept, r)
	b.bySeq[r.Seq], b.byRound[roundKey(r)] = r.Hash, r.Hash
	b.lastSeq = max(b.lastSeq, r.Seq)
}

// keepReceipts verifies receipts (JSON) and appends them to the file.
func (c *Client) keepReceipts(raws [][]byte) error {
	b := c.book
	if b == nil || b.pub == nil || len(raws) == 0 {
		return nil
	}
	var rs []ledger.Receipt
	for _, raw := range raws {
		var r ledger.Receipt
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("client: malformed receipt from the coordinator: %w", err)
		}
		rs = append(rs, r)
	}
	for _, r := range rs {
		if err := c.checkTranscriptHead(r); err != nil {
			return err
		}
	}
	if err := ledger.VerifyClientReceipts(rs, b.pub, c.clientID(), b.digests); err != nil {
		// A receipt that does not verify is evidence: keep nothing of it
		// and say so loudly.
		c.log.Error("a receipt from the coordinator does not verify", "err", err, "receipt_key", ledger.FormatPublicKey(b.pub))
		if c.cfg.Manifest != nil {
			// Under the manifest's key, a receipt that does not verify
			// is a chain re-signed or rewritten, not a glitch.
			return fmt.Errorf("%w: %v", ErrReceiptChain, err)
		}
		return err
	}
	var fresh []ledger.Receipt
	for _, r := range rs {
		ok, err := b.extend(r)
		if err != nil {
			c.log.Error("the coordinator's receipts rewrite the chain kept", "err", err)
			return err
		}
		if ok {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	f, err := os.OpenFile(b.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for _, r := range fresh {
		if err := ledger.WriteReceiptLine(f, r); err != nil {
			f.Close()
			return err
		}
		b.add(r)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	c.log.Info("receipts kept", "count", len(fresh), "file", b.path, "last_seq", b.lastSeq)
	return f.Close()
}

// openReceiptBook reads an existing receipts file so that a restarted
// client resumes after the last receipt it kept, and checks that the
// coordinator extends it rather than rewriting it.
func openReceiptBook(path string) (*receiptBook, error) {
	b := &receiptBook{path: path, digests: map[int]string{}, bySeq: map[uint64]string{}, byRound: map[string]string{}}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return b, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rs, _, err := ledger.ReadReceiptLines(f)
	if err != nil {
		return nil, fmt.Errorf("client: receipts file %s: %w", path, err)
	}
	for _, r := range rs {
		if _, err := b.extend(r); err != nil {
			return nil, fmt.Errorf("client: receipts file %s: %w", path, err)
		}
		b.add(r)
	}
	return b, nil
}

// roundKey names what a receipt is the one receipt of: its round, and its
// kind when the ledger gives receipts one (a settlement receipt names the
// last round of its period, beside that round's own receipt). The kind is
// read from the receipt's JSON, so that the key follows whatever kinds
// ledger.Receipt carries.
func roundKey(r ledger.Receipt) string {
	var k struct {
		Kind string `json:"kind"`
	}
	if b, err := json.Marshal(r); err == nil {
		_ = json.Unmarshal(b, &k)
	}
	return fmt.Sprintf("%s/%d", k.Kind, r.Round)
}

// entryGradient is the hex digest of the multiplier vector a transcript
// entry commits to, as the receipts list it ("" for none).
func entryGradient(e aggregation.TranscriptEntry) string {
	if e.Gradient == ([32]byte{}) {
		return ""
	}
	return hex.EncodeToString(e.Gradient[:])
}
