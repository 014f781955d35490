// Package aggregation computes federated averages so that no single party,
// the coordinator included, ever sees a client's update: plaintext FedAvg
// (McMahan et al., AISTATS 2017) as the reference, and its secure version
// on multiparty CKKS (Cheon, Kim, Kim, Song, ASIACRYPT 2017; Mouchet,
// Troncoso-Pastoriza, Bossuat, Hubaux, "Multiparty Homomorphic Encryption
// from Ring-Learning-with-Errors", PETS 2021) with t-of-c threshold
// decryption (Mouchet, Bertrand, Hubaux, "An Efficient Threshold
// Access-Structure for RLWE-Based Multiparty Homomorphic Encryption",
// ePrint 2022/780), built on lattigo v6.
//
// # Protocol
//
//   - Key generation, no dealer. The coordinator names a committee of c
//     clients and a threshold t ([Committee] → [KeyGenInstance], named by
//     the hash of its content). Each [Member] draws its own secret share
//     sᵢ, publishes a public-key share on a common reference polynomial
//     derived from a keyed PRNG over (instance, purpose), and sends every
//     other member a Shamir share of sᵢ, sealed end to end with X25519 +
//     HKDF-SHA256 + AES-256-GCM, bound to (instance, sender, recipient).
//     [AggregatePublicKey] sums the public-key shares into the collective
//     key pk for s = Σ sᵢ; each member sums the Shamir shares it received
//     into its threshold share.
//   - Client. [Encryptor] encodes nᵢ·Δᵢ and, in the slot after the last
//     parameter, nᵢ, into ceil((P+1)/slots) ciphertexts under pk.
//   - Coordinator. [Accumulator] adds each ciphertext on arrival and keeps
//     one running sum per block; [Accumulator.Finalize] gives the
//     [Aggregate] with a SHA-256 digest per block.
//   - Decryption. A [DecryptRequest] names the key, purpose, round,
//     digests, contributors and exactly t participants. Each participant
//     checks its [Policy] and [Record] and returns c₁·λᵢ·s̃ᵢ + eᵢ
//     ([Member.DecryptShare]), λᵢ its Lagrange coefficient for the
//     participant set and eᵢ Gaussian flooding noise; [Decryptor.CombineBlock]
//     adds the t shares to c₀ and decodes, [Assemble] divides by Σ nᵢ.
//
// # Threat model and guarantees
//
// The coordinator is honest-but-curious, clients are semi-honest, and
// fewer than t committee members collude with the coordinator (DESIGN §3).
// Then: no update is ever decrypted; the coordinator learns only the
// aggregates that t members agree to decrypt; a member refuses (1) an
// aggregate of fewer than k contributors (default 3), (2) a second share
// for a ciphertext digest, retries included, (3) a ciphertext that does not
// hash to the named digest, and (4) a contributor set that differs from
// one it already decrypted in the same round by fewer than k clients
// (decrypting S and S∖{i} would reveal client i by subtraction). Members
// cannot check that an aggregate really sums the contributors it names;
// that is why the coordinator is assumed to follow the protocol, and why
// the record is kept for audit. Shamir shares are not verifiable (no
// commitments): a malicious member can make key generation fail, not leak.
// Up to c − t members may vanish after key generation; the public key needs
// all c shares, so a member lost during key generation means a re-key with
// a new epoch.
//
// # Parameters and security
//
// [DefaultParameters] is DESIGN §6: LogN 14 over the conjugate-invariant
// ring (16,384 real slots), Q = two 60-bit primes, P = one 61-bit prime,
// scale 2^60, 53-bit encoder, uniform ternary secrets, error σ = 3.2, and
// σ = 2^30 flooding noise on decryption shares. log₂(QP) ≈ 181 bits. The
// Homomorphic Encryption Standard (Albrecht et al., 2018, Table 1,
// uniform ternary secret) gives 128-bit classical security for N = 2^14 up
// to log₂(QP) = 438; this package relies on that bound, applied to the
// conjugate-invariant ring of dimension N as argued by Kim and Song
// ("Approximate Homomorphic Encryption over the Conjugate-invariant Ring",
// ICISC 2018). [NewParameters] refuses sets above the table's bound unless
// Insecure is set, which only tests do. The flooding noise σ = 2^30 exceeds
// the noise of a fresh public-key encryption by roughly 2^20; that is the
// project's chosen trade-off (DESIGN §6), not a proof of statistical
// 2^-128 indistinguishability of the shares, which would need flooding
// near 2^(λ)·(ciphertext noise) and more modulus.
//
// Measured precision (TestDefaultParametersPrecision, BenchmarkDecrypt,
// 2-core x86-64): with the default set, the decrypted average of 8
// clients (weights 5 to 60,000, values in [−1, 1]) differs from plaintext
// FedAvg by at most 1.8e-11, i.e. about 1.2e-6 on the sum Σ nᵢ·Δᵢ; over
// 1M parameters and 3 clients (weights 100, 200, 300) with 3-of-5
// decryption it is 2.7e-9 on the average, about 1.6e-6 on the sum. Tests
// assert 1e-6 on the average.
//
// # Wire formats
//
// Everything that travels is a []byte in a fixed, versioned format (see
// wire.go) validated completely before lattigo sees it: parameters
// fingerprint, key instance, level, degree, exact size, and every
// coefficient reduced. Malformed input yields an error wrapping
// [ErrMalformed] (or a more specific sentinel), never a panic.
//
// Randomness: secrets, encryption noise and flooding noise come from
// lattigo's cryptographically secure PRNG and are not reproducible by
// design; only the common reference polynomial is derived (from the
// instance), so same seed, same public parameters.
package aggregation
