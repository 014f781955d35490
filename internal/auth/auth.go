package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Metadata keys of a signed call.
const (
	MDClient = "tally-client"
	MDTime   = "tally-time"
	MDNonce  = "tally-nonce"
	MDSig    = "tally-sig"
	// MDBody is the hex SHA-256 of a unary call's request (BodyDigest);
	// absent on streams.
	MDBody = "tally-body"
)

// NonceBytes is the length of a call's nonce.
const NonceBytes = 16

// DefaultSkew is how far a call's timestamp may be from the verifier's
// clock, either way. A call older than that is refused as expired; within
// it, its nonce is remembered so that it cannot be replayed.
const DefaultSkew = 2 * time.Minute

// Errors of call authentication. Each names what a refused caller did
// wrong; none says whether the client id exists.
var (
	ErrMissing   = errors.New("auth: the call carries no client signature")
	ErrMalformed = errors.New("auth: malformed call signature")
	ErrExpired   = errors.New("auth: the call's timestamp is outside the allowed clock skew")
	ErrBadSig    = errors.New("auth: the call's signature does not verify")
	ErrReplayed  = errors.New("auth: the call's nonce was already used")
	// ErrTooManyCalls refuses a genuine call because the verifier already
	// remembers as many nonces as it may, of this client or of all: it
	// cannot record the call's nonce, so it could not refuse a replay.
	ErrTooManyCalls = errors.New("auth: too many calls within the clock-skew window")
)

// Bounds of the nonces a Verifier remembers. A nonce is kept while its
// call's timestamp is within the skew (DefaultSkew either way), so without
// a bound one enrolled client signing calls as fast as it can (tens of
// thousands a second) would grow the store by megabytes a second. With
// them, the store holds at most DefaultMaxNonces entries (about 50 bytes
// each with the map's overhead: ~50 MiB), and no client more than
// DefaultMaxNoncesPerClient. An honest client long-polls (one call per 10
// s when idle) and makes a handful of calls per round: 32,768 calls in a
// 2-minute window is 270 calls a second, far above what one makes.
const (
	DefaultMaxNoncesPerClient = 1 << 15
	DefaultMaxNonces          = 1 << 20
)

// message is what a call's signature covers: a domain label, the job (a
// signature for one job is worthless at another), the client, the full gRPC
// method (a signed NextTask cannot be turned into a SubmitUpdate), the time,
// the nonce and the digest of the request (a stream's first message: see
// WithFirstMessage; its later messages are not covered), each
// length-prefixed so that no two tuples encode alike. v2 added the digest.
func message(job, client, method string, unixMilli int64, nonce, body []byte) []byte {
	var b []byte
	for _, f := range [][]byte{[]byte("tally call v2"), []byte(job), []byte(client), []byte(method), []byte(strconv.FormatInt(unixMilli, 10)), nonce, body} {
		b = append(b, byte(len(f)>>8), byte(len(f)))
		b = append(b, f...)
	}
	return b
}

// Sign returns the metadata that authenticates one call of method by client
// at job, signed with key at time now under a fresh random nonce, covering
// no request body (a stream).
func Sign(key ed25519.PrivateKey, job, client, method string, now time.Time) (metadata.MD, error) {
	return SignBody(key, job, client, method, nil, now)
}

// SignBody is Sign for a unary call whose request has the digest body
// (BodyDigest): the signature covers it, so a call cannot be replayed or
// relayed with another request, even by a party that terminates TLS.
func SignBody(key ed25519.PrivateKey, job, client, method string, body []byte, now time.Time) (metadata.MD, error) {
	nonce := make([]byte, NonceBytes)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	ms := now.UnixMilli()
	sig := ed25519.Sign(key, message(job, client, method, ms, nonce, body))
	md := metadata.Pairs(
		MDClient, client,
		MDTime, strconv.FormatInt(ms, 10),
		MDNonce, hex.EncodeToString(nonce),
		MDSig, base64.RawStdEncoding.EncodeToString(sig),
	)
	if body != nil {
		md.Set(MDBody, hex.EncodeToString(body))
	}
	return md, nil
}

// firstKey carries the first message of a stream about to be opened.
type firstKey struct{}

// WithFirstMessage returns ctx carrying msg, the first message of the
// stream the caller is about to open through a Conn: the stream's
// signature then covers msg's digest, as a unary call's covers its
// request, and the server checks the first message it receives against
// it. Metadata leaves with the stream's opening, so the message must be
// known before the stream is; a stream of a client-streaming call carries
// its header in its first message, a server-streaming call its request.
func WithFirstMessage(ctx context.Context, msg any) context.Context {
	return context.WithValue(ctx, firstKey{}, msg)
}

// BodyDigest is the SHA-256 of a request's deterministic protobuf encoding,
// which client and server compute alike from the same message.
func BodyDigest(req any) ([]byte, error) {
	m, ok := req.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%w: request %T is not a protobuf message", ErrMalformed, req)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return sum[:], nil
}

// Call is a parsed, not yet verified, call signature.
type Call struct {
	Client string
	Time   time.Time
	Nonce  [NonceBytes]byte
	Sig    []byte
	// Body is the request digest the call claims to sign; nil on a stream.
	Body []byte
	ms   int64
}

// Parse reads a call's signature from its metadata. ErrMissing means the
// call carries none at all.
func Parse(md metadata.MD) (Call, error) {
	one := func(k string) (string, bool) {
		v := md.Get(k)
		if len(v) != 1 {
			return "", false
		}
		return v[0], true
	}
	client, okC := one(MDClient)
	ts, okT := one(MDTime)
	nonce, okN := one(MDNonce)
	sig, okS := one(MDSig)
	if !okC && !okT && !okN && !okS {
		return Call{}, ErrMissing
	}
	if !okC || !okT || !okN || !okS || client == "" {
		return Call{}, fmt.Errorf("%w: want exactly one each of %s, %s, %s and %s", ErrMalformed, MDClient, MDTime, MDNonce, MDSig)
	}
	var c Call
	c.Client = client
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Call{}, fmt.Errorf("%w: %s %q is not milliseconds since 1970", ErrMalformed, MDTime, ts)
	}
	c.ms, c.Time = ms, time.UnixMilli(ms)
	n, err := hex.DecodeString(nonce)
	if err != nil || len(n) != NonceBytes {
		return Call{}, fmt.Errorf("%w: %s is not %d hex-encoded bytes", ErrMalformed, MDNonce, NonceBytes)
	}
	copy(c.Nonce[:], n)
	if c.Sig, err = base64.RawStdEncoding.DecodeString(sig); err != nil || len(c.Sig) != ed25519.SignatureSize {
		return Call{}, fmt.Errorf("%w: %s is not a base64 Ed25519 signature", ErrMalformed, MDSig)
	}
	switch v := md.Get(MDBody); len(v) {
	case 0:
	case 1:
		if c.Body, err = hex.DecodeString(v[0]); err != nil || len(c.Body) != sha256.Size {
			return Call{}, fmt.Errorf("%w: %s is not a hex SHA-256", ErrMalformed, MDBody)
		}
	default:
		return Call{}, fmt.Errorf("%w: more than one %s", ErrMalformed, MDBody)
	}
	return c, nil
}

// Verifier checks call signatures and remembers the nonces of the calls it
// accepted for as long as their timestamps stay within the skew, so that a
// captured call cannot be sent again. It remembers at most MaxPerClient
// nonces of one client and MaxNonces in all; a genuine call beyond either
// is refused with ErrTooManyCalls (and changes nothing), until calls age
// out of the window. Set the bounds before the first Verify. Safe for
// concurrent use.
type Verifier struct {
	Job          string
	Skew         time.Duration
	MaxPerClient int
	MaxNonces    int

	mu     sync.Mutex
	seen   map[string]map[[NonceBytes]byte]int64 // client → nonce → the call's time (ms)
	count  int                                   // nonces in seen
	pruned int64                                 // when last pruned (ms)
}

// NewVerifier returns a verifier for job's calls, with the default bounds.
func NewVerifier(job string, skew time.Duration) *Verifier {
	if skew <= 0 {
		skew = DefaultSkew
	}
	return &Verifier{Job: job, Skew: skew, MaxPerClient: DefaultMaxNoncesPerClient, MaxNonces: DefaultMaxNonces,
		seen: map[string]map[[NonceBytes]byte]int64{}}
}

// Verify checks c, a call of method, against the client's bound key pub at
// time now, and records its nonce. The signature is checked before the
// nonce is recorded: a forged call cannot burn a nonce, nor use up another
// client's bound.
func (v *Verifier) Verify(c Call, pub ed25519.PublicKey, method string, now time.Time) error {
	skew := v.Skew.Milliseconds()
	nowMs := now.UnixMilli()
	if d := nowMs - c.ms; d > skew || d < -skew {
		return fmt.Errorf("%w: signed at %s, %s from this server's clock (at most %s allowed)", ErrExpired,
			c.Time.UTC().Format(time.RFC3339), time.Duration(d)*time.Millisecond, v.Skew)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, message(v.Job, c.Client, method, c.ms, c.Nonce[:], c.Body), c.Sig) {
		return ErrBadSig
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	mine := v.seen[c.Client]
	if _, ok := mine[c.Nonce]; ok {
		return ErrReplayed
	}
	// Forget the calls that left the window every quarter skew, and when
	// a bound is reached, but then at most every skew/64 (under 2 s): a
	// client that keeps calling at its bound must not make every call cost
	// a pass over the whole store.
	full := (v.MaxPerClient > 0 && len(mine) >= v.MaxPerClient) || (v.MaxNonces > 0 && v.count >= v.MaxNonces)
	if since := nowMs - v.pruned; since >= skew/4 || (full && since >= skew/64) {
		v.prune(nowMs, skew)
		mine = v.seen[c.Client]
	}
	switch {
	case v.MaxPerClient > 0 && len(mine) >= v.MaxPerClient:
		return fmt.Errorf("%w: client %s made %d calls within %s", ErrTooManyCalls, c.Client, len(mine), v.Skew)
	case v.MaxNonces > 0 && v.count >= v.MaxNonces:
		return fmt.Errorf("%w: %d calls of all clients within %s", ErrTooManyCalls, v.count, v.Skew)
	}
	if mine == nil {
		mine = map[[NonceBytes]byte]int64{}
		v.seen[c.Client] = mine
	}
	mine[c.Nonce] = c.ms
	v.count++
	return nil
}

// prune forgets the nonces of calls outside the window. Called with v.mu
// held.
func (v *Verifier) prune(nowMs, skew int64) {
	for client, mine := range v.seen {
		for n, t := range mine {
			if nowMs-t > skew {
				delete(mine, n)
				v.count--
			}
		}
		if len(mine) == 0 {
			delete(v.seen, client)
		}
	}
	v.pruned = nowMs
}

// Remembered is how many nonces the verifier holds (for tests).
func (v *Verifier) Remembered() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.count
}

// TokenHash is how an enrolment token is stored: the hex SHA-256 of the
// token. Tokens carry 256 random bits, so a plain hash (not a slow password
// hash) is enough: nothing short of the token itself finds a preimage.
func TokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// NewToken returns a fresh enrolment token: 32 random bytes, base64url.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "tly_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// Signer says who signs a call: the key, the job and the client id. An
// empty client id sends the call unsigned (Enroll, before there is one).
type Signer func() (key ed25519.PrivateKey, job, client string)

// Conn returns a connection that signs every call made through it with
// the identity signer gives at the time of the call, stamped by now.
func Conn(cc grpc.ClientConnInterface, signer Signer, now func() time.Time) grpc.ClientConnInterface {
	if now == nil {
		now = time.Now
	}
	return signedConn{cc, signer, now}
}

type signedConn struct {
	cc     grpc.ClientConnInterface
	signer Signer
	now    func() time.Time
}

func (c signedConn) sign(ctx context.Context, method string, body []byte) (context.Context, error) {
	key, job, client := c.signer()
	if client == "" {
		return ctx, nil
	}
	md, err := SignBody(key, job, client, method, body, c.now())
	if err != nil {
		return nil, err
	}
	if old, ok := metadata.FromOutgoingContext(ctx); ok {
		md = metadata.Join(old, md)
	}
	return metadata.NewOutgoingContext(ctx, md), nil
}

func (c signedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	body, err := BodyDigest(args)
	if err != nil {
		return err
	}
	ctx, err = c.sign(ctx, method, body)
	if err != nil {
		return err
	}
	return c.cc.Invoke(ctx, method, args, reply, opts...)
}

func (c signedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	var body []byte
	if m := ctx.Value(firstKey{}); m != nil {
		var err error
		if body, err = BodyDigest(m); err != nil {
			return nil, err
		}
	}
	ctx, err := c.sign(ctx, method, body)
	if err != nil {
		return nil, err
	}
	return c.cc.NewStream(ctx, desc, method, opts...)
}
