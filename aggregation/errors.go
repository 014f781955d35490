package aggregation

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them,
// so callers (the gRPC adapters in particular) map them to status codes
// with errors.Is in one place.
var (
	// ErrInvalidConfig reports a parameter or policy configuration that
	// fails validation.
	ErrInvalidConfig = errors.New("aggregation: invalid configuration")
	// ErrInvalidInput reports a malformed argument passed by the caller
	// (lengths, weights, indices).
	ErrInvalidInput = errors.New("aggregation: invalid input")
	// ErrMalformed reports bytes received from another party that do not
	// decode: wrong magic, version, sizes or out-of-range coefficients.
	ErrMalformed = errors.New("aggregation: malformed message")
	// ErrWireVersion reports a message in another version of its kind's
	// wire format (always with [ErrMalformed]): a ciphertext written by a
	// tally from before c₀ was rounded (version 1), in a state file or
	// from a client, is refused by name rather than misread.
	ErrWireVersion = errors.New("aggregation: unsupported wire format version")
	// ErrParametersMismatch reports a message produced under other
	// cryptographic parameters.
	ErrParametersMismatch = errors.New("aggregation: parameters mismatch")
	// ErrKeyMismatch reports a message bound to another key-generation
	// instance (for example a ciphertext under a key from before a re-key).
	ErrKeyMismatch = errors.New("aggregation: key instance mismatch")
	// ErrBlockMismatch reports a ciphertext or share whose block index or
	// block count does not match what the receiver expects.
	ErrBlockMismatch = errors.New("aggregation: block mismatch")
	// ErrDuplicate reports a second ciphertext for the same client and
	// block; the first one was kept.
	ErrDuplicate = errors.New("aggregation: duplicate contribution")
	// ErrIncomplete reports an aggregate that cannot be finalised because a
	// contributor has not delivered every block, or because shares are
	// missing.
	ErrIncomplete = errors.New("aggregation: incomplete")
	// ErrNotMember reports an identity that is not part of the committee
	// or of the request's participants.
	ErrNotMember = errors.New("aggregation: not a committee member")
	// ErrState reports a call made in the wrong protocol state, such as a
	// decryption request before the threshold share was assembled.
	ErrState = errors.New("aggregation: wrong protocol state")
	// ErrSealed reports a sealed message that fails to open: tampered,
	// addressed to someone else or bound to other associated data.
	ErrSealed = errors.New("aggregation: sealed message rejected")
	// ErrPolicy reports a decryption request refused by a member's policy.
	ErrPolicy = errors.New("aggregation: decryption refused by policy")
	// ErrAlreadyServed reports a request for a second decryption share of a
	// ciphertext digest; it also wraps ErrPolicy.
	ErrAlreadyServed = errors.New("aggregation: digest already served")
	// ErrInfluenceServed reports a request for a second influence
	// coefficient share for the same (job, round, client), whatever its
	// digest, participants or request; it also wraps ErrPolicy.
	ErrInfluenceServed = errors.New("aggregation: influence share already served for this client and round")
	// ErrFloodingBudget reports a decryption request beyond the caps the
	// flooding noise is sized for (he_params.flooding); it also wraps
	// ErrPolicy.
	ErrFloodingBudget = errors.New("aggregation: beyond the flooding bound")
	// ErrTranscript reports a decryption transcript that does not hold:
	// an entry unsigned, signed by a non-participant or under a wrong key,
	// for another job, or signed although it breaks the rules.
	ErrTranscript = errors.New("aggregation: decryption transcript rejected")
	// ErrTranscriptFork reports entries that do not extend the head this
	// party holds: the coordinator shows parties different chains.
	ErrTranscriptFork = errors.New("aggregation: decryption transcript forked")
	// ErrSetDifference reports a whole decryption whose contributor set
	// differs from one already decrypted in the same round by fewer than
	// k clients; it also wraps ErrPolicy.
	ErrSetDifference = errors.New("aggregation: contributor set differs from a decrypted one by fewer than k")
	// ErrScalarBudget reports an influence request beyond the scalars
	// allowed per client and round; it also wraps ErrPolicy.
	ErrScalarBudget = errors.New("aggregation: influence scalars per client and round exhausted")
	// ErrStaleRound reports a request for a round before the latest one in
	// the transcript; it also wraps ErrPolicy.
	ErrStaleRound = errors.New("aggregation: request for a round before the transcript's latest")
	// ErrNotAdmitted reports a share asked for a request the member has not
	// admitted ([Member.Admit]).
	ErrNotAdmitted = errors.New("aggregation: request not admitted to the transcript")
	// ErrDigestMismatch reports a ciphertext that does not hash to the
	// digest named in the request.
	ErrDigestMismatch = errors.New("aggregation: ciphertext digest mismatch")
	// ErrDecryption reports a combination that produced values outside the
	// range any honest aggregate can have: shares from the wrong
	// participants, too few shares, or a corrupted ciphertext.
	ErrDecryption = errors.New("aggregation: decryption failed")
)

// Errors of authenticated key generation: each is what an honest party
// says when the coordinator (or a member) deviates.
var (
	// ErrUnsignedKey reports a collective public key that does not carry a
	// valid signature of every committee member over exactly that key; a
	// client refuses to encrypt under it.
	ErrUnsignedKey = errors.New("aggregation: collective public key not signed by every committee member")
	// ErrMemberKey reports a member's X25519 key that its identity key did
	// not sign, or a member whose identity key is unknown or differs from
	// the pinned one; no Shamir share is sealed to it.
	ErrMemberKey = errors.New("aggregation: committee member key not authenticated")
	// ErrCommitment reports a public-key share commitment that is missing,
	// not signed by its member, or not matched by the share revealed.
	ErrCommitment = errors.New("aggregation: public-key share commitment missing, unsigned or not matched")
)
