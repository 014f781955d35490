package ledger

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxLineBytes bounds one receipt line. A receipt is a few hundred bytes
// plus about 120 per decryption it lists; a megabyte leaves room for
// thousands of decryptions while keeping a corrupt file from exhausting
// memory.
const maxLineBytes = 1 << 20

// WriteReceiptLine appends r to w as one line of JSON (the "JSON lines"
// format of a client's receipts file), in the same encoding the ledger
// stores.
func WriteReceiptLine(w io.Writer, r Receipt) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("ledger: encode receipt %d: %w", r.Seq, err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("ledger: write receipt %d: %w", r.Seq, err)
	}
	return nil
}

// ReadReceiptLines reads a JSON-lines receipts file. Blank lines are
// skipped; lines[i] is the 1-based line number of rs[i]. A line that is not
// exactly one receipt (unknown fields included) fails with a *VerifyError
// (Problem ProblemEncoding) carrying its line number.
func ReadReceiptLines(r io.Reader) (rs []Receipt, lines []int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLineBytes)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		rec, err := decodeStrict(line)
		if err != nil {
			return nil, nil, &VerifyError{Index: len(rs), Line: n, Problem: ProblemEncoding, Detail: err.Error()}
		}
		rs = append(rs, rec)
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("ledger: read receipts after line %d: %w", n, err)
	}
	return rs, lines, nil
}

// VerifyClientFile reads a client's receipts file and checks it with
// VerifyClientReceipts; a failure names the line as well as the receipt.
func VerifyClientFile(r io.Reader, pub ed25519.PublicKey, client string, digests map[int]string) ([]Receipt, error) {
	rs, lines, err := ReadReceiptLines(r)
	if err != nil {
		return nil, err
	}
	if err := VerifyClientReceipts(rs, pub, client, digests); err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			ve.Line = lines[ve.Index]
		}
		return nil, err
	}
	return rs, nil
}
