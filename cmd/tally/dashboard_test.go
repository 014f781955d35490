package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallyfl/tally/ledger"
)

// The browser tests drive the pages in headless Chromium (Debian's
// chromium package; .ci/run and `make chromium` install it). Without it
// they skip, loudly, except under CI, where a missing browser fails them.

// chromiumPath returns the browser, or skips or fails the test without one.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not installed, and CI is set: the browser tests must run in CI (apt-get install chromium, see .ci/run)")
	}
	t.Skip("chromium not installed: SKIPPING the dashboard's browser tests (apt-get install chromium, or make chromium)")
	return ""
}

// artefacts is where the tests leave their screenshots: $TALLY_ARTEFACTS
// when set (CI keeps it), else a temporary directory, logged.
func artefacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TALLY_ARTEFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	dir = filepath.Join(dir, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// browse runs headless Chromium on url with a fresh profile and returns
// the DOM after the page's script ran; with shot set it also writes a
// screenshot of the window (1280 wide, height tall) there. The virtual
// time budget lets timers and fetches run before the dump without waiting
// for them in wall time.
func browse(t *testing.T, chromium, url, shot string, height int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--hide-scrollbars", "--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000", "--dump-dom"}
	if shot != "" {
		args = append(args, "--screenshot="+shot, fmt.Sprintf("--window-size=1280,%d", height))
	}
	cmd := exec.CommandContext(ctx, chromium, append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	if shot != "" {
		if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
			t.Fatalf("no screenshot of %s in %s: %v", url, shot, err)
		}
	}
	return stdout.String()
}

// lockedBuffer is an io.Writer the simulation writes to while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor polls out until re matches, for up to a minute.
func waitFor(t *testing.T, out *lockedBuffer, done <-chan error, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m
		}
		select {
		case err := <-done:
			t.Fatalf("the simulation ended (%v) before printing %q:\n%s", err, re, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("no %q after two minutes:\n%s", re, out.String())
	return nil
}

// pagePoints returns the rounds of a chart series' points, in DOM order.
func pagePoints(dom, series string) []int {
	re := regexp.MustCompile(`<circle [^>]*class="point" data-series="` + regexp.QuoteMeta(series) + `" data-round="(\d+)"`)
	var out []int
	for _, m := range re.FindAllStringSubmatch(dom, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// pageTable reads the contribution table: one ledger.Standing per row,
// from the raw numbers in its data-value attributes.
func pageTable(t *testing.T, dom string) []ledger.Standing {
	t.Helper()
	i := strings.Index(dom, `id="contrib-table"`)
	if i < 0 {
		t.Fatalf("no contribution table in the page:\n%s", dom)
	}
	table := dom[i:]
	table = table[:strings.Index(table, "</table>")]
	rowRe := regexp.MustCompile(`<tr data-client="([^"]+)">(.*?)</tr>`)
	cellRe := regexp.MustCompile(`data-field="(\w+)" data-value="([^"]*)"(?: data-stderr="([^"]*)")?`)
	var out []ledger.Standing
	for _, m := range rowRe.FindAllStringSubmatch(table, -1) {
		s := ledger.Standing{Client: m[1]}
		for _, c := range cellRe.FindAllStringSubmatch(m[2], -1) {
			v, err := strconv.ParseFloat(c[2], 64)
			if err != nil {
				t.Fatalf("row %s: %s=%q is not a number", m[1], c[1], c[2])
			}
			switch c[1] {
			case "rank":
				s.Rank = int(v)
			case "rounds":
				s.Rounds = int(v)
			case "value":
				s.Value = v
				if s.StdErr, err = strconv.ParseFloat(c[3], 64); err != nil {
					t.Fatalf("row %s: stderr %q", m[1], c[3])
				}
			case "payout":
				s.Payout = v
			case "quota":
				s.Quota = v
			}
		}
		out = append(out, s)
	}
	return out
}

// TestDashboardInBrowser runs a small simulated job under secure
// aggregation with the dashboard on and a viewer token, and drives its
// pages in headless Chromium: the charts have one point per finished
// round, the contribution table is `tally scores --format json`, a
// request without the token is refused, the state-file dashboard shows
// the same job after it ended, and a data holder's page marks a tampered
// receipt as failing and the others as verified. Screenshots of each page
// are kept as artefacts.
func TestDashboardInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	shots := artefacts(t)
	dir := t.TempDir()
	db, receipts, tokenFile := filepath.Join(dir, "sim.db"), filepath.Join(dir, "receipts"), filepath.Join(dir, "viewer.token")
	report := filepath.Join(dir, "report.json")
	const rounds = 3
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- runSimulate(ctx, []string{"--clients", "4", "--rounds", strconv.Itoa(rounds), "--seed", "3", "--corrupt", "3=free-rider:zero",
			"--centralised=false", "--db", db, "--receipts-dir", receipts, "--report", report,
			"--dashboard-addr", "127.0.0.1:0", "--dashboard-token-file", tokenFile, "--dashboard-linger", "10m"}, out, io.Discard)
	}()
	base := waitFor(t, out, done, regexp.MustCompile(`dashboard at (http://127\.0\.0\.1:\d+/)`))[1]
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tok))

	// Refused without the credential, or with a wrong one: by the API...
	for name, header := range map[string]string{"none": "", "wrong": "Bearer not-the-token-at-all"} {
		req, _ := http.NewRequest("GET", base+"api/state", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || bytes.Contains(body, []byte("client-0")) {
			t.Errorf("credential %s: status %d, want 401 and no job data; body %s", name, resp.StatusCode, body)
		}
	}
	// ... and in the browser, which gets the refusal page and no data.
	refused := browse(t, chromium, base, filepath.Join(shots, "refused.png"), 300)
	if !strings.Contains(refused, `id="refused"`) || !strings.Contains(refused, `data-status="401"`) || strings.Contains(refused, "client-0") {
		t.Errorf("the page without a token was not refused:\n%s", refused)
	}

	// The job ends; the dashboard lingers with its final state.
	waitFor(t, out, done, regexp.MustCompile(`job over; the dashboard`))
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep simReport
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	var finished []int
	for _, r := range rep.Rounds {
		finished = append(finished, r.Round)
	}
	if len(finished) != rounds {
		t.Fatalf("report has rounds %v, want %d", finished, rounds)
	}

	// What the API shows must not include what JobStatus hides: no
	// submission digest, signature, enrolment token or key.
	req, _ := http.NewRequest("GET", base+"api/state", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	state, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with the token: status %d: %s", resp.StatusCode, state)
	}
	f, err := os.Open(filepath.Join(receipts, "client-0.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := ledger.ReadReceiptLines(f)
	f.Close()
	// One per round and the job's settlement.
	if err != nil || len(own) != rounds+1 {
		t.Fatalf("client-0 kept %d receipts (%v), want %d", len(own), err, rounds+1)
	}
	secrets := []string{"sim-token-", token}
	for _, r := range own {
		secrets = append(secrets, r.SubmissionDigest, r.Signature, r.Hash)
	}
	for _, s := range secrets {
		if s != "" && bytes.Contains(state, []byte(s)) {
			t.Errorf("/api/state reveals %q", s)
		}
	}

	live := browse(t, chromium, base+"?token="+token, filepath.Join(shots, "coordinator.png"), 1900)
	checkCoordinatorPage(t, live, "done", finished)
	liveTable := pageTable(t, live)

	// Stop the simulation: the state file is free for tally scores and
	// for the state-file dashboard.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("simulation: %v\n%s", err, out.String())
	}
	var scores bytes.Buffer
	if err := runScores(context.Background(), []string{"--db", db, "--format", "json"}, &scores, io.Discard); err != nil {
		t.Fatal(err)
	}
	var want []ledger.Standing
	if err := json.Unmarshal(scores.Bytes(), &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != 4 {
		t.Fatalf("tally scores lists %d clients, want 4:\n%s", len(want), scores.String())
	}
	if !slices.Equal(liveTable, want) {
		t.Errorf("the live page's contribution table\n%+v\nis not tally scores --format json\n%+v", liveTable, want)
	}

	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	sout := &lockedBuffer{}
	sdone := make(chan error, 1)
	go func() {
		sdone <- runDashboard(sctx, []string{"--state", db, "--addr", "127.0.0.1:0"}, sout, io.Discard)
	}()
	sbase := waitFor(t, sout, sdone, regexp.MustCompile(`at (http://127\.0\.0\.1:\d+/)`))[1]
	fromFile := browse(t, chromium, sbase, filepath.Join(shots, "coordinator-from-state-file.png"), 1900)
	checkCoordinatorPage(t, fromFile, "stopped", finished)
	if got := pageTable(t, fromFile); !slices.Equal(got, want) {
		t.Errorf("the state-file page's contribution table\n%+v\nis not tally scores --format json\n%+v", got, want)
	}
	scancel()
	if err := <-sdone; err != nil {
		t.Errorf("tally dashboard: %v", err)
	}

	// The data holder's page: client-0's receipts, one of them tampered
	// with (its payout raised), verified against the published key.
	pub := regexp.MustCompile(`signed with ([0-9a-f]{64})`).FindStringSubmatch(out.String())
	if pub == nil {
		t.Fatalf("no public key in the output:\n%s", out.String())
	}
	tampered := filepath.Join(dir, "tampered.jsonl")
	var lines bytes.Buffer
	for i, r := range own {
		if i == 1 {
			r.Payout += 1000
		}
		if err := ledger.WriteReceiptLine(&lines, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(tampered, lines.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(shots, "receipts.html")
	err = runReceipts(context.Background(), []string{"render", "--receipts", tampered, "--public-key", pub[1], "--client", "client-0", "--out", page}, io.Discard, io.Discard)
	if !errors.Is(err, errReceiptsFail) {
		t.Errorf("tally receipts render of a tampered file: %v, want %v", err, errReceiptsFail)
	}
	dom := browse(t, chromium, "file://"+page, filepath.Join(shots, "receipts.png"), 1100)
	rowRe := regexp.MustCompile(`<tr data-line="(\d+)" data-seq="(\d+)" data-round="(\d+)" data-verified="(true|false)"`)
	rows := rowRe.FindAllStringSubmatch(dom, -1)
	if len(rows) != len(own) {
		t.Fatalf("the receipts page has %d receipt rows, want %d:\n%s", len(rows), len(own), dom)
	}
	for i, m := range rows {
		if wantOK := strconv.FormatBool(i != 1); m[4] != wantOK {
			t.Errorf("receipt on line %s (round %s): verified=%s, want %s", m[1], m[3], m[4], wantOK)
		}
	}
	if !strings.Contains(dom, `data-failing="1"`) || !strings.Contains(dom, "FAILS: hash mismatch") {
		t.Errorf("the page does not say that one receipt fails on its hash:\n%s", dom)
	}
	if got := pagePoints(dom, "payout"); len(got) != len(own)-1 {
		t.Errorf("payout chart has points for rounds %v, want the %d verified receipts only", got, len(own)-1)
	}

	// The untouched file verifies throughout.
	clean := filepath.Join(shots, "receipts-clean.html")
	if err := runReceipts(context.Background(), []string{"render", "--receipts", filepath.Join(receipts, "client-0.jsonl"), "--public-key", pub[1], "--client", "client-0", "--out", clean}, io.Discard, io.Discard); err != nil {
		t.Errorf("tally receipts render of the client's own file: %v", err)
	}
	if dom := browse(t, chromium, "file://"+clean, "", 0); !strings.Contains(dom, `data-failing="0"`) || strings.Contains(dom, `data-verified="false"`) {
		t.Errorf("the untouched receipts do not all verify on the page:\n%s", dom)
	}
}

// checkCoordinatorPage checks the coordinator page's DOM after its script
// ran: the phase, and one point per finished round in both charts.
func checkCoordinatorPage(t *testing.T, dom, phase string, finished []int) {
	t.Helper()
	if !strings.Contains(dom, `data-phase="`+phase+`"`) {
		t.Errorf("the page is not in phase %q (did its script run?):\n%.2000s", phase, dom)
	}
	for _, series := range []string{"val_loss", "val_accuracy"} {
		if got := pagePoints(dom, series); !slices.Equal(got, finished) {
			t.Errorf("%s chart has points for rounds %v, want one per finished round %v", series, got, finished)
		}
	}
	for _, id := range []string{"loss-chart", "accuracy-chart", "values-chart"} {
		if !strings.Contains(dom, `id="`+id+`"`) {
			t.Errorf("no chart %s on the page", id)
		}
	}
	if !strings.Contains(dom, `<td data-field="purpose">round</td>`) {
		t.Errorf("the decryption audit lists no decryption of a round's sum")
	}
}
