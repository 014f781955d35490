// Package auth authenticates a tally client's calls after enrolment.
//
// At enrolment a client presents a token the ML team issued and the public
// half of an Ed25519 key pair it generated; the coordinator binds the key
// to the client's identity and consumes the token. Every later call carries
// in its gRPC metadata the client id, the time in milliseconds, a random
// 128-bit nonce, and an Ed25519 signature over those, the job id and the
// full gRPC method name. The coordinator verifies the signature with the
// bound key, refuses timestamps outside a clock-skew window (a captured call
// expires), and remembers the nonces of the window (a captured call cannot
// be replayed within it), up to a bound per client and in all: a genuine
// call beyond it is refused (ErrTooManyCalls) rather than forgotten. Nothing secret travels after enrolment, so a
// leaked log or a read of the coordinator's state file does not let anyone
// act as a client.
//
// The signature covers the call's identity, not its body: an attacker who
// can rewrite traffic in flight could alter the body of a call it delays.
// Transport integrity is TLS's job (the coordinator's --tls-cert, and
// --client-ca for mutual TLS); the signature is what binds a call to the
// enrolled key whether or not TLS is on, and survives TLS-terminating
// proxies.
//
// Enrolment tokens are stored only as SHA-256 hashes (TokenHash): they
// carry 256 random bits, so a fast hash cannot be inverted by guessing.
package auth
