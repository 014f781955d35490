package dashboard

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tallyfl/tally/ledger"
)

// Receipts is a data holder's view of its own receipts file: every line,
// each verified on its own against the coordinator's public key, so that
// one bad receipt is marked without hiding the others.
type Receipts struct {
	Client    string `json:"client"`
	File      string `json:"file"`
	PublicKey string `json:"public_key"`
	// Jobs are the jobs the receipts name, in order of appearance.
	Jobs     []string  `json:"jobs"`
	Rows     []Row     `json:"rows"`
	Verified int       `json:"verified"`
	Failing  int       `json:"failing"`
	Checked  time.Time `json:"checked"`
	// Totals over the verified receipts only. Value sums the rounds'
	// values; a settlement's value is its period's total V, shown on its
	// row and not added again. Payout and Quota include settlements.
	Value  float64 `json:"value"`
	Payout float64 `json:"payout"`
	Quota  float64 `json:"quota"`
}

// Row is one line of the receipts file.
type Row struct {
	Line  int    `json:"line"`
	Seq   uint64 `json:"seq"`
	Job   string `json:"job"`
	Round int    `json:"round"`
	// Kind is "settlement" for the value part of rounds FromRound … Round.
	Kind      string              `json:"kind,omitempty"`
	FromRound int                 `json:"from_round,omitempty"`
	Method    string              `json:"method"`
	Mode      string              `json:"mode"`
	Value     float64             `json:"value"`
	StdErr    float64             `json:"stderr"`
	Payout    float64             `json:"payout"`
	Quota     float64             `json:"quota"`
	Decrypted []ledger.Decryption `json:"decrypted"`
	Verified  bool                `json:"verified"`
	// Problem says why a receipt fails, as `tally ledger verify` would.
	Problem string `json:"problem,omitempty"`
}

// VerifyReceipts reads a client's receipts file and checks each receipt:
// its hash covers its fields, pub signed it, it names client, and its seq
// is above that of the last good receipt before it (receipts are a
// client's subsequence of one chain). A line that is not a receipt fails
// on its own.
func VerifyReceipts(path string, pub ed25519.PublicKey, client string) (Receipts, error) {
	out := Receipts{Client: client, File: path, PublicKey: ledger.FormatPublicKey(pub), Jobs: []string{}, Rows: []Row{}, Checked: time.Now().UTC()}
	f, err := os.Open(path)
	if err != nil {
		return out, fmt.Errorf("dashboard: receipts file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var lastSeq uint64
	jobs := map[string]bool{}
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		row := Row{Line: line, Decrypted: []ledger.Decryption{}}
		rs, _, err := ledger.ReadReceiptLines(bytes.NewReader(text))
		if err != nil {
			row.Problem = problem(err)
			out.Rows = append(out.Rows, row)
			out.Failing++
			continue
		}
		r := rs[0]
		row.Seq, row.Job, row.Round, row.Method, row.Mode = r.Seq, r.Job, r.Round, r.Method, r.Mode
		row.Kind, row.FromRound = r.Kind, r.FromRound
		row.Value, row.StdErr, row.Payout, row.Quota = r.Value, r.StdErr, r.Payout, r.Quota
		if r.Decrypted != nil {
			row.Decrypted = r.Decrypted
		}
		if !jobs[r.Job] {
			jobs[r.Job] = true
			out.Jobs = append(out.Jobs, r.Job)
		}
		switch err := ledger.VerifyClientReceipts(rs, pub, client, nil); {
		case err != nil:
			row.Problem = problem(err)
		case r.Seq <= lastSeq:
			row.Problem = fmt.Sprintf("%s: seq %d does not increase after %d", ledger.ProblemSeq, r.Seq, lastSeq)
		default:
			row.Verified = true
			lastSeq = r.Seq
			if r.Kind == "" {
				out.Value += r.Value
			}
			out.Payout += r.Payout
			out.Quota += r.Quota
		}
		if row.Verified {
			out.Verified++
		} else {
			out.Failing++
		}
		out.Rows = append(out.Rows, row)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("dashboard: %s: %w", path, err)
	}
	return out, nil
}

// problem is a VerifyError's problem and detail, without the position
// (the page shows line and seq in their own columns).
func problem(err error) string {
	var ve *ledger.VerifyError
	if errors.As(err, &ve) {
		if ve.Detail != "" {
			return fmt.Sprintf("%s: %s", ve.Problem, ve.Detail)
		}
		return string(ve.Problem)
	}
	return err.Error()
}

// WriteReceiptsPage writes the data holder's page for rs as one
// self-contained HTML file: style, script and data inline, nothing
// fetched, so it opens from disk (file://) in any browser.
func WriteReceiptsPage(w io.Writer, rs Receipts) error {
	data, err := json.Marshal(rs) // escapes <, > and &: safe inside <script>
	if err != nil {
		return err
	}
	css, _ := assets.ReadFile("assets/style.css")
	chart, _ := assets.ReadFile("assets/chart.js")
	js, _ := assets.ReadFile("assets/receipts.js")
	page, _ := assets.ReadFile("assets/receipts.html")
	title := html.EscapeString(fmt.Sprintf("tally receipts · %s", rs.Client))
	out := strings.NewReplacer(
		"{{TITLE}}", title,
		"{{STYLE}}", string(css),
		"{{DATA}}", string(data),
		"{{SCRIPT}}", string(chart)+"\n"+string(js),
	).Replace(string(page))
	_, err = io.WriteString(w, out)
	return err
}

// receiptsCSP allows the page's inline style and script and nothing else.
const receiptsCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'"

// NewReceipts returns the data holder's server: the page at /, rebuilt
// from the receipts file at every request (a running client appends to
// it), and the same data at /api/receipts.
func NewReceipts(cfg Config, path string, pub ed25519.PublicKey, client string) *Server {
	s := newServer(cfg)
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		rs, err := VerifyReceipts(path, pub, client)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Security-Policy", receiptsCSP)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := WriteReceiptsPage(w, rs); err != nil {
			s.cfg.Log.Warn("dashboard: write receipts page", "err", err)
		}
	})
	s.mux.HandleFunc("GET /api/receipts", func(w http.ResponseWriter, r *http.Request) {
		rs, err := VerifyReceipts(path, pub, client)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(rs)
	})
	return s
}
