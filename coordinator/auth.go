package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tallyfl/tally/engine"
	"github.com/tallyfl/tally/internal/auth"
	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// Errors of client authentication. Unknown or unverifiable credentials map
// to Unauthenticated; credentials that are genuine but no longer admitted
// (a used-up token, a revoked token or client) to PermissionDenied.
var (
	ErrTokenExpired = errors.New("coordinator: enrolment token expired")
	ErrTokenUsed    = errors.New("coordinator: enrolment token already used")
	ErrRevoked      = errors.New("coordinator: credential revoked")
	ErrBadKey       = errors.New("coordinator: malformed client key")
	// ErrNotJoined refuses the calls of an enrolled client that has not
	// joined this coordinator process yet (it restarted): the engine keeps
	// no client's identity key or presence across a restart, so the client
	// must call Resume first. It maps to Unauthenticated, on which a client
	// joins again.
	ErrNotJoined = errors.New("coordinator: client has not resumed since the coordinator started; call Resume")
)

// DefaultTokenUses is how many enrolments a token admits unless it says
// otherwise: one. A client that restarts does not enrol again; it resumes
// with the key it enrolled (Resume).
const DefaultTokenUses = 1

// TokensPath is where a job's tokens file lives unless told otherwise:
// JOB_ID.tokens next to the job file.
func TokensPath(job engine.Job) string { return filepath.Join(job.Dir, job.ID+".tokens") }

// TokenRecord is one line of a job's tokens file (JSON lines, appended to
// by `tally token create` and `tally token revoke`, read by the
// coordinator whenever the file changes). A create line holds the token's
// SHA-256, never the token. A revoke line names a token id or a client.
type TokenRecord struct {
	Op      string    `json:"op"` // "create" or "revoke"
	TokenID string    `json:"token_id,omitempty"`
	Client  string    `json:"client,omitempty"`
	SHA256  string    `json:"sha256,omitempty"`
	Created time.Time `json:"created,omitzero"`
	Expires time.Time `json:"expires,omitzero"`
	Uses    int       `json:"uses,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// ReadTokens reads a tokens file. A missing file is an empty one. Errors
// name the file and line.
func ReadTokens(path string) ([]TokenRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []TokenRecord
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r TokenRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %v", engine.ErrConfig, path, line, err)
		}
		switch {
		case r.Op == "create" && (r.TokenID == "" || r.Client == "" || len(r.SHA256) != 64 || r.Uses < 1):
			return nil, fmt.Errorf("%w: %s:%d: a create line needs token_id, client, a 64-hex-digit sha256 and uses ≥ 1", engine.ErrConfig, path, line)
		case r.Op == "revoke" && (r.TokenID == "") == (r.Client == ""):
			return nil, fmt.Errorf("%w: %s:%d: a revoke line names either token_id or client", engine.ErrConfig, path, line)
		case r.Op != "create" && r.Op != "revoke":
			return nil, fmt.Errorf("%w: %s:%d: op %q, want create or revoke", engine.ErrConfig, path, line, r.Op)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// appendToken appends one record to the tokens file, creating it readable
// by its owner only, and syncs it: a token printed has been written.
func appendToken(path string, r TokenRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CreateToken issues an enrolment token for client, a client of job, and
// appends its hash to the tokens file at path. The token is returned once
// and stored nowhere. ttl ≤ 0 means it does not expire; uses < 1 means
// DefaultTokenUses.
func CreateToken(path string, job engine.Job, client string, ttl time.Duration, uses int, now time.Time) (string, TokenRecord, error) {
	if !slices.Contains(job.ClientIDs(), client) {
		return "", TokenRecord{}, fmt.Errorf("%w: client %q is not in the job's clients.enrolment (%s)", engine.ErrConfig, client, strings.Join(job.ClientIDs(), ", "))
	}
	tok, err := auth.NewToken()
	if err != nil {
		return "", TokenRecord{}, err
	}
	id, err := auth.NewToken()
	if err != nil {
		return "", TokenRecord{}, err
	}
	if uses < 1 {
		uses = DefaultTokenUses
	}
	r := TokenRecord{Op: "create", TokenID: "tok-" + auth.TokenHash(id)[:12], Client: client, SHA256: auth.TokenHash(tok), Created: now.UTC(), Uses: uses}
	if ttl > 0 {
		r.Expires = now.Add(ttl).UTC()
	}
	if err := appendToken(path, r); err != nil {
		return "", TokenRecord{}, err
	}
	return tok, r, nil
}

// RevokeToken refuses the token id from now on. A client it already
// enrolled keeps its key; revoke the client to turn that away too.
func RevokeToken(path, tokenID string, now time.Time) error {
	recs, err := ReadTokens(path)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(recs, func(r TokenRecord) bool { return r.Op == "create" && r.TokenID == tokenID }) {
		return fmt.Errorf("%w: %s has no token %q", engine.ErrConfig, path, tokenID)
	}
	return appendToken(path, TokenRecord{Op: "revoke", TokenID: tokenID, At: now.UTC()})
}

// RevokeClient refuses every call of client from now on, and every token
// that names it.
func RevokeClient(path string, job engine.Job, client string, now time.Time) error {
	if !slices.Contains(job.ClientIDs(), client) {
		return fmt.Errorf("%w: client %q is not in the job's clients.enrolment", engine.ErrConfig, client)
	}
	return appendToken(path, TokenRecord{Op: "revoke", Client: client, At: now.UTC()})
}

// Binding is a client's enrolled call-signing key.
type Binding struct {
	Client string            `json:"client"`
	Key    ed25519.PublicKey `json:"key"`
	// Token is the id of the token that enrolled it.
	Token string    `json:"token"`
	At    time.Time `json:"at"`
}

// AuthStore keeps enrolments. Contract: Bind consumes one of the uses of
// token tokenID (it admits uses in all) and binds b.Client to b.Key in one
// atomic step, replacing an earlier key of the client (a client that lost
// its key enrols again with a new token); with no use left it returns
// ErrTokenUsed and changes nothing. Binding again the key the same token
// already bound to the client succeeds and consumes nothing: a client whose
// enrolment answer was lost (the coordinator restarted) retries it. A nil error means the binding is
// durable. Bindings returns every current binding. Safe for concurrent use.
type AuthStore interface {
	Bind(tokenID string, uses int, b Binding) error
	Bindings() ([]Binding, error)
}

// memoryAuth is an AuthStore in memory.
type memoryAuth struct {
	mu    sync.Mutex
	used  map[string]int
	bound map[string]Binding
}

func newMemoryAuth() *memoryAuth {
	return &memoryAuth{used: map[string]int{}, bound: map[string]Binding{}}
}

func (m *memoryAuth) Bind(tokenID string, uses int, b Binding) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.bound[b.Client]; ok && old.Token == tokenID && old.Key.Equal(b.Key) {
		return nil
	}
	if m.used[tokenID] >= uses {
		return fmt.Errorf("%w: token %s admitted %d enrolment(s)", ErrTokenUsed, tokenID, uses)
	}
	m.used[tokenID]++
	m.bound[b.Client] = b
	return nil
}

func (m *memoryAuth) Bindings() ([]Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Binding, 0, len(m.bound))
	for _, b := range m.bound {
		out = append(out, b)
	}
	return out, nil
}

// tokenEntry is an admitted token, known by its hash.
type tokenEntry struct {
	id, client string
	expires    time.Time
	uses       int
}

// tokenBook is the set of tokens a coordinator admits: those of the job
// file and those of the tokens file, reread when the file changes.
type tokenBook struct {
	path   string
	static map[string]tokenEntry // by hash, from the job file

	mu             sync.Mutex
	byHash         map[string]tokenEntry
	revokedTokens  map[string]bool
	revokedClients map[string]bool
	stamp          string    // the file's size and modification time when read
	checked        time.Time // when the file was last looked at
	err            error     // the last read's error, reported once per change
}

// tokenRecheck bounds how often a call looks at the tokens file for new
// revocations.
const tokenRecheck = time.Second

func newTokenBook(job engine.Job, path string) *tokenBook {
	b := &tokenBook{path: path, static: map[string]tokenEntry{}}
	for _, e := range job.Clients.Enrolment {
		h := e.TokenSHA256
		if e.Token != "" {
			h = auth.TokenHash(e.Token)
		}
		if h != "" {
			b.static[strings.ToLower(h)] = tokenEntry{id: "job:" + e.ID, client: e.ID, uses: max(e.Uses, DefaultTokenUses)}
		}
	}
	b.byHash = b.static
	return b
}

// refresh rereads the tokens file if it changed, looking at most once per
// tokenRecheck unless force. A file that fails to parse leaves the last
// good reading in force and is reported through log.
func (b *tokenBook) refresh(now time.Time, force bool, log *slog.Logger) {
	if b.path == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !force && now.Sub(b.checked) < tokenRecheck {
		return
	}
	b.checked = now
	stamp := ""
	if fi, err := os.Stat(b.path); err == nil {
		stamp = fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	if stamp == b.stamp {
		return
	}
	recs, err := ReadTokens(b.path)
	if err != nil {
		log.Error("tokens file unreadable; keeping the tokens read before", "file", b.path, "err", err)
		b.stamp = stamp
		return
	}
	byHash := make(map[string]tokenEntry, len(b.static)+len(recs))
	for h, e := range b.static {
		byHash[h] = e
	}
	rt, rc := map[string]bool{}, map[string]bool{}
	for _, r := range recs {
		switch {
		case r.Op == "create":
			byHash[strings.ToLower(r.SHA256)] = tokenEntry{id: r.TokenID, client: r.Client, expires: r.Expires, uses: r.Uses}
		case r.TokenID != "":
			rt[r.TokenID] = true
		default:
			rc[r.Client] = true
		}
	}
	b.byHash, b.revokedTokens, b.revokedClients, b.stamp = byHash, rt, rc, stamp
}

// lookup finds the token's entry and whether it, or its client, is
// revoked. The map is keyed by the token's hash: timing reveals at most
// something about a hash, which does not help to guess a token.
func (b *tokenBook) lookup(token string) (e tokenEntry, ok, revoked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok = b.byHash[auth.TokenHash(token)]
	return e, ok, ok && (b.revokedTokens[e.id] || b.revokedClients[e.client])
}

func (b *tokenBook) clientRevoked(client string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.revokedClients[client]
}

// callerKey carries the authenticated client id in a call's context.
type callerKey struct{}

// caller returns the client a call was authenticated as.
func caller(ctx context.Context) (string, error) {
	id, ok := ctx.Value(callerKey{}).(string)
	if !ok || id == "" {
		return "", ErrBadSession
	}
	return id, nil
}

// openMethods are the service's methods that carry no client signature:
// Enroll presents a token instead, JobStatus is the operator's view, and
// Schema is what a client checks its data against before it enrols.
var openMethods = map[string]bool{
	tallyv1.CoordinatorService_Enroll_FullMethodName:    true,
	tallyv1.CoordinatorService_JobStatus_FullMethodName: true,
	tallyv1.CoordinatorService_Schema_FullMethodName:    true,
}

// needsSignature reports whether a call of method must be signed: every
// method of the coordinator service but the open ones. The health and
// reflection services are public.
func needsSignature(method string) bool {
	return strings.HasPrefix(method, "/"+tallyv1.CoordinatorService_ServiceDesc.ServiceName+"/") && !openMethods[method]
}

// unknownClientKey is the key a call naming a client with no enrolled key
// is checked against. It verifies nothing (no one holds its private half:
// it is the public key of the all-zero seed's hash), and checking it costs
// what checking an enrolled key costs, so that a stranger learns from
// neither the answer nor its time whether a client id exists.
var unknownClientKey = func() ed25519.PublicKey {
	seed := sha256.Sum256([]byte("tally: no client has this key"))
	return ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
}()

// authenticateCall verifies a signed call of method and returns the client
// it came from. Every refusal is logged with its reason and the peer's
// address (rate-limited: Service.logs), counted, and changes nothing but
// the log. What the caller is told does not depend on whether the client
// id it named exists: an unknown id and a wrong key both get "signature
// does not verify", and a revoked client is told so only once its call
// verified.
func (s *Service) authenticateCall(ctx context.Context, method string, body []byte, stream bool) (string, []byte, error) {
	now := time.Now()
	refuse := func(client, why string, err error) (string, []byte, error) {
		s.logs.Log(slog.LevelWarn, "call refused", "method", method, "client", client, "peer", peerAddr(ctx), "reason", why)
		s.tel.Refused(method, refusedReason(err))
		return "", nil, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	c, err := auth.Parse(md)
	if err != nil {
		err = fmt.Errorf("%w: %v", ErrBadSession, err)
		return refuse("", err.Error(), err)
	}
	switch {
	case stream && c.Body == nil:
		// A stream signs the digest of its first message, which the
		// stream wrapper (StreamAuth) checks when it arrives.
		err := fmt.Errorf("%w: %v: the stream's signature covers no first message", ErrBadSession, auth.ErrBadSig)
		return refuse(c.Client, "stream signed without its first message", err)
	case !stream && !bytes.Equal(c.Body, body):
		err := fmt.Errorf("%w: %v: the request is not the one the call's signature covers", ErrBadSession, auth.ErrBadSig)
		return refuse(c.Client, "request body does not match its signed digest", err)
	}
	if isEdgeMethod(method) {
		id, err := s.authenticateEdge(c, method, now)
		if err != nil {
			why := err.Error()
			if errors.Is(err, ErrNotEdge) {
				// The operator's log may say what the edge is not told.
				why = fmt.Sprintf("the job lists no edge %q", c.Client)
				if _, listed := s.edges[c.Client]; listed {
					why = fmt.Sprintf("edge %q is listed with another key than the one that signed the call", c.Client)
				}
			}
			return refuse(c.Client, why, err)
		}
		return id, c.Body, nil
	}
	s.mu.Lock()
	key := s.keys[c.Client]
	s.mu.Unlock()
	known := key != nil
	if !known {
		key = unknownClientKey
	}
	if err := s.verifier.Verify(c, key, method, now); err != nil {
		why := err.Error()
		if !known && errors.Is(err, auth.ErrBadSig) {
			// The operator's log may say what the caller is not told.
			why = fmt.Sprintf("no key is enrolled for client %q", c.Client)
		}
		if errors.Is(err, auth.ErrTooManyCalls) {
			return refuse(c.Client, why, err)
		}
		return refuse(c.Client, why, fmt.Errorf("%w: %v", ErrBadSession, err))
	}
	s.tokens.refresh(now, false, s.log)
	if s.tokens.clientRevoked(c.Client) {
		err := fmt.Errorf("%w: client %s", ErrRevoked, c.Client)
		return refuse(c.Client, err.Error(), err)
	}
	s.mu.Lock()
	joined := s.joined[c.Client]
	s.mu.Unlock()
	if !joined && method != tallyv1.CoordinatorService_Resume_FullMethodName {
		s.logs.Log(slog.LevelInfo, "client must resume", "client", c.Client, "method", method)
		return "", nil, fmt.Errorf("%w: client %s", ErrNotJoined, c.Client)
	}
	return c.Client, c.Body, nil
}

// UnaryAuth is the server's unary interceptor: it authenticates signed
// methods and puts the caller in the context.
func (s *Service) UnaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !needsSignature(info.FullMethod) {
		return handler(ctx, req)
	}
	body, err := auth.BodyDigest(req)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %v", ErrBadSession, err))
	}
	id, _, err := s.authenticateCall(ctx, info.FullMethod, body, false)
	if err != nil {
		return nil, toStatus(err)
	}
	return handler(context.WithValue(ctx, callerKey{}, id), req)
}

// StreamAuth is UnaryAuth for streams: a stream is authenticated once,
// when it opens, before the handler reads a byte of it.
func (s *Service) StreamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !needsSignature(info.FullMethod) {
		return handler(srv, ss)
	}
	id, first, err := s.authenticateCall(ss.Context(), info.FullMethod, nil, true)
	if err != nil {
		return toStatus(err)
	}
	return handler(srv, &callerStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, id), first: first, method: info.FullMethod, s: s})
}

// peerAddr is the caller's network address, for refusal logs.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// refusedReason names a refusal in metrics by the status it gets.
func refusedReason(err error) string {
	if errors.Is(err, ErrRevoked) || errors.Is(err, ErrTokenUsed) {
		return "permission_denied"
	}
	if errors.Is(err, auth.ErrTooManyCalls) {
		return "resource_exhausted"
	}
	return "unauthenticated"
}

// callerStream carries the caller in its context and checks the stream's
// first message against the digest its signature covers.
type callerStream struct {
	grpc.ServerStream
	ctx     context.Context
	first   []byte // the signed digest of the first message; nil once checked
	method  string
	s       *Service
	checked bool
}

func (c *callerStream) Context() context.Context { return c.ctx }

func (c *callerStream) RecvMsg(m any) error {
	if err := c.ServerStream.RecvMsg(m); err != nil || c.checked {
		return err
	}
	c.checked = true
	got, err := auth.BodyDigest(m)
	if err != nil || !bytes.Equal(got, c.first) {
		id, _ := caller(c.ctx)
		c.s.logs.Log(slog.LevelWarn, "call refused", "method", c.method, "client", id, "peer", peerAddr(c.ctx), "reason", "the stream's first message does not match its signed digest")
		c.s.tel.Refused(c.method, refusedReason(ErrBadSession))
		return unauthenticated{fmt.Errorf("%w: %v: the stream's first message is not the one its signature covers", ErrBadSession, auth.ErrBadSig)}
	}
	return nil
}

// unauthenticated is Unauthenticated both to a handler that maps the
// error it got from Recv (toStatus sees ErrBadSession) and to gRPC when a
// handler returns it as is (a generated server-streaming handler does).
type unauthenticated struct{ error }

func (e unauthenticated) Unwrap() error { return e.error }

func (e unauthenticated) GRPCStatus() *status.Status {
	return status.New(codes.Unauthenticated, e.Error())
}
