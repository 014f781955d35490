package client

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"

	"github.com/tallyfl/tally/ledger"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// receiptBook is the client's own copy of its receipts: each one is
// checked (the coordinator's signature, this client's id, the digest of
// what this client submitted that round) before it is appended, as a JSON
// line, to the receipts file.
type receiptBook struct {
	path    string
	pub     ed25519.PublicKey
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
		// and say so loudly, but do not stop contributing.
		c.log.Error("a receipt from the coordinator does not verify", "err", err)
		return err
	}
	f, err := os.OpenFile(b.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if err := ledger.WriteReceiptLine(f, r); err != nil {
			f.Close()
			return err
		}
		b.lastSeq = r.Seq
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	c.log.Info("receipts kept", "count", len(rs), "file", b.path, "last_seq", b.lastSeq)
	return f.Close()
}

// openReceiptBook reads an existing receipts file so that a restarted
// client resumes after the last receipt it kept.
func openReceiptBook(path string) (*receiptBook, error) {
	b := &receiptBook{path: path, digests: map[int]string{}}
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
		b.lastSeq = max(b.lastSeq, r.Seq)
	}
	return b, nil
}
