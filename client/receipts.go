package client

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/tallyfl/tally/ledger"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// ErrReceiptChain: the coordinator's receipts rewrite or fork the chain
// this client kept: a receipt for a sequence number already kept with
// another hash, a second receipt for a round already receipted, a receipt
// right after the last one kept that does not chain from it, or a
// receipts file not signed by the key the client checks receipts with.
var ErrReceiptChain = errors.New("client: the coordinator's receipts rewrite the chain this client kept")

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
	resp, err := c.api.Receipts(ctx, &tallyv1.ReceiptsRequest{AfterSeq: c.book.lastSeq})
	if err != nil {
		return err
	}
	return c.keepReceipts(resp.GetReceipts())
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
