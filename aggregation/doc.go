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
//   - Key generation, no dealer, authenticated. The coordinator names a
//     committee of c clients and a threshold t ([Committee] →
//     [KeyGenInstance], named by the hash of its content, which lists each
//     member's X25519 key and Ed25519 identity key). Three steps, each
//     relayed by the coordinator and none trusted unsigned
//     (see attest.go):
//     1. Commit ([Member.Commit]). Each member draws its own secret share
//     sᵢ and its public-key share on a common reference polynomial derived
//     from a keyed PRNG over (instance, purpose), and sends only a
//     [Commitment]: SHA-256 over (domain, instance, member, share), signed
//     with its identity key, with its signature of (domain, job, member,
//     X25519 key).
//     2. Reveal ([Member.Reveal]). Given all c commitments, each valid
//     under the member's identity key from [MemberKeys] (a pinned
//     manifest; nil: the instance's listed keys), every X25519 key signed
//     by its member, the member reveals its public-key share and sends
//     every other member a Shamir share of sᵢ, sealed end to end with
//     X25519 + HKDF-SHA256 + AES-256-GCM, bound to (instance, sender,
//     recipient). Otherwise it refuses ([ErrCommitment], [ErrMemberKey])
//     and seals nothing.
//     3. Certify ([Member.CertifyPublicKey], [Member.ReceiveThresholdShares]).
//     Each member fetches all c revealed shares, checks each against its
//     commitment, sums them itself ([AggregatePublicKey]) into the
//     collective key pk for s = Σ sᵢ and signs (domain, job, instance,
//     SHA-256 of pk); it sums the Shamir shares it received into its
//     threshold share. The c signatures form the [KeyCertificate] the
//     coordinator serves with pk, and a client encrypts only under a key
//     [VerifyPublicKey] accepts: one signed by every committee member.
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
//   - Influence valuation (docs/DESIGN.md §3, mode "influence"). [Influence]
//     multiplies each block of a client's update by the plaintext of the
//     validation gradient's block and sums the products into one
//     ciphertext per client, whose constant coefficient holds
//     aᵢ = ⟨∇L_val, nᵢ·Δᵢ⟩; members release a share of that coefficient
//     only ([Member.DecryptCoefficientShare]) and
//     [Decryptor.CombineCoefficient] returns aᵢ. See "Influence" below.
//
// # Threat model and guarantees
//
// Key generation holds against a coordinator that deviates arbitrarily,
// with fewer than t committee members colluding with it: it cannot have
// a member seal a Shamir share to a key of its own (X25519 keys are signed
// by their members, [ErrMemberKey]; attack test
// TestAttackX25519KeySubstituted), cannot choose a member's public-key
// share after seeing the others so that the collective key is its own
// (shares are committed to, signed, before any is revealed, and checked
// against the commitment by every member, [ErrCommitment];
// TestAttackRogueShareAfterSeeingOthers, TestAttackRevealWithoutCommitments),
// and cannot hand clients a key the committee did not sign
// ([ErrUnsignedKey]; TestVerifyPublicKey, and client's
// TestClientRefusesUnsignedKey). With [MemberKeys] nil the identity keys
// are those the coordinator lists, so every signature still binds each
// message to the member the coordinator named, but a coordinator that
// invents the whole committee is caught only by a pinned manifest. A
// colluding member can commit to a share chosen before seeing the others;
// that gives it nothing, as the key's secret is the sum of all c.
//
// For the rest of the protocol the coordinator is honest-but-curious,
// clients are semi-honest, and fewer than t committee members collude with
// the coordinator (docs/DESIGN.md §3).
// Then: no update is ever decrypted; the coordinator learns only the
// aggregates that t members agree to decrypt; a member refuses (1) an
// aggregate of fewer than k contributors (default 3; the one exception,
// a single coefficient per client per round, is described under
// "Influence"), (2) a second share for a ciphertext digest, retries
// included, (3) a ciphertext that does not
// hash to the named digest, and (4) a contributor set that differs from
// one it already decrypted in the same round by fewer than k clients
// (decrypting S and S∖{i} would reveal client i by subtraction). Members
// cannot check that an aggregate really sums the contributors it names;
// that is why the coordinator is assumed to follow the protocol, and why
// the record is kept for audit. Shamir shares are not verifiable (the
// commitments bind the public-key shares, not the Shamir polynomials): a
// malicious member can make key generation fail, not leak.
// Up to c − t members may vanish after key generation; the public key needs
// all c shares, so a member lost during key generation means a re-key with
// a new epoch.
//
// # Parameters and security
//
// [DefaultParameters] is docs/DESIGN.md §6: LogN 14 over the conjugate-invariant
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
// project's chosen trade-off (docs/DESIGN.md §6), not a proof of statistical
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
// Noise floor. [Parameters.SlotNoiseSigma] gives the standard deviation of
// the error on each decoded slot of a decrypted sum: the t shares' flooding
// noise (t·σ_f² per coefficient) and each contributor's fresh-encryption
// and encoding noise (far smaller), spread over the slots by decoding
// (variance ×2N for the conjugate-invariant ring) and divided by the scale:
// √(2N·t)·σ_f/Δ ≈ 2.9e-7 for the default set and t = 3.
// TestSlotNoiseSigma measures it within 1% on aggregates of zeros. A
// decrypted sum smaller than a few of these is indistinguishable from zero;
// the coordinator's feature scaling uses it to tell a zero variance from
// noise (dataset.Moments.ScalerWithNoise).
//
// # Influence
//
// The fact it rests on: the constant coefficient of a CKKS plaintext is
// the scale times the mean of its slots (real parts for the standard
// ring), for both ring types, because summing m(ζ) over all primitive
// roots ζ gives the degree times m₀ and the slots are one evaluation per
// conjugate pair (TestConstantCoefficientIsScaledMean pins it). The slots
// of gradient × update are gⱼ·nᵢΔᵢⱼ (zero in the weight slot and unused
// slots, where the gradient plaintext is zero), so the constant
// coefficient of the summed product is Δ·Δ_g·aᵢ/slots: no rotation keys,
// no slot sums.
//
// Modulus budget. The product of a 2^60 ciphertext with a 2^60 plaintext
// cannot be rescaled and still hold aᵢ in Q = 2^120, so the gradient is
// encoded at a small scale Δ_g with 2^25 ≤ max|g|·Δ_g < 2^26, and nothing
// is rescaled: the product is decrypted at the top level with scale
// 2^60·Δ_g. Only the constant coefficient is ever reconstructed, so the
// others may wrap modulo Q; the constant one is
// 2^60·Δ_g·aᵢ/slots ≤ 2^(60+26−14)·‖nᵢΔᵢ‖₁, and it must stay below Q/8
// after the combiner's factor D (below): D·‖nᵢΔᵢ‖₁ ≤ 2^45
// ([Parameters.InfluenceMaxL1]). The brief's realistic maximum (P = 1e5,
// nᵢ ≤ 1e4, |Δ| ≤ 1) is ‖nᵢΔᵢ‖₁ ≤ 1e9 ≈ 2^30, leaving 15 bits, of which D
// takes none when the answering members are consecutive (or evenly
// spaced) and at most 11.5 for any subset of a committee of 12. Beyond the
// budget the combiner refuses (ErrDecryption) when the value lands between
// Q/8 and Q/2 (TestInfluenceBudget); a wrap past Q/2 cannot be detected.
//
// Precision. The dominant error is the rounding of the gradient
// plaintext's coefficients to integers: in the slots it is a perturbation
// δg of standard deviation √(N/12)/Δ_g, so the error on aᵢ is about
// N(0, (√(N/12)·‖nᵢΔᵢ‖₂/Δ_g)²). The encryption noise and the clients'
// own rounding add less than 2^-30·max|g|; the flooding noise, σ = 2^30
// grown by Σ|cᵢ| ≤ 2^17 (c ≤ 12) and divided by a scale of at least
// 2^85/max|g|, adds at most 6σ·2^17·slots·2^-85·max|g| < 2^-21·max|g|. The
// tests assert six standard deviations plus that term,
// |âᵢ − aᵢ| ≤ (6·√(N/12)·2^-25·‖nᵢΔᵢ‖₂ + 2^-21)·max|g|, i.e.
// 6.6e-6·max|g|·‖nᵢΔᵢ‖₂ + 4.8e-7·max|g| for N = 2^14. Measured with the default set (TestInfluencePrecision, P =
// 1e5, gradient entries 1e-4..1, nᵢ ∈ {1, 37, 1500, 1e4}, update entries
// 1e-3..1, 3 of 5 shares): at most 1.4e-6·max|g|·‖nᵢΔᵢ‖₂; with
// independent signs the largest absolute error is 0.24 on aᵢ = −2.4e5 and
// the largest relative error 9.6e-6 (on aᵢ = −179); with update signs
// aligned against the gradient (a descent step, the largest |aᵢ|) 0.54 on
// aᵢ = −1.6e7, relative at most 7.6e-8. Answer sets with D = 1 and D = 6
// give the same errors.
//
// Coefficient shares. A member returns (c₁·s̃ᵢ)₀ + eᵢ, one word per Q
// prime (96 bytes, against 256 KiB for a whole share): s̃ᵢ its Shamir
// share, eᵢ one Gaussian sample of the flooding σ. It is a single LWE
// sample of s̃ᵢ, the same kind of value as each of the N coefficients of a
// whole share. Policy: purpose "influence" only, one digest, one
// contributor (the one case below k contributors, allowed because one
// scalar is released), the ciphertext hashing to the digest, and at most
// one share per (job, round, client) ever — across retries, participant
// sets, digests and re-keys of the job — recorded in the [Record] before
// the share leaves. Whole shares ([Member.DecryptShare]) refuse purpose
// "influence", and an influence ciphertext has its own wire kind, which
// DecryptShare does not parse, so it can never be decrypted whole. The
// committee thus bounds what the coordinator learns about a client to one
// scalar per round even from a dishonest request; what it cannot check is
// which linear functional of which ciphertexts that scalar is, nor that
// the client named is the one encrypted (the coordinator is assumed
// honest-but-curious, as for aggregates).
//
// Dropouts. A share weighted by its Lagrange coefficient λᵢ belongs to one
// participant set, and a member must never answer for the same
// coefficient twice with different weights: from λ_A·X + e_A and
// λ_B·X + e_B with public λ_A, λ_B, reducing a 2-dimensional lattice of
// determinant q recovers X = (c₁·s̃ᵢ)₀ exactly, an exact equation in the
// member's key share. So members send the share without λᵢ, and any t of
// the answers combine. λ cannot in general move to the combiner (λᵢ is an
// element of Z_q and λᵢ·eᵢ would be uniform), but the Shamir points here
// are 1..c, so λᵢ = cᵢ/D with small integers: the combiner computes
// D·c₀,₀ + Σ cᵢ·shareᵢ = D·(m₀ + e) + Σ cᵢeᵢ (mod Q) and divides by D in
// the reals, choosing among the answers the t with the smallest D
// (consecutive or evenly spaced points give D = 1). Cost: log₂D bits of
// the budget and noise growth Σ|cᵢ|. When more than t members answer, the
// coordinator can combine several subsets; their differences reveal the
// R − t combinations of the flooding noises that vanish on the secret
// polynomial, which leave at least σ/√R of flooding on the scalar (half a
// bit per doubling of R; 1.2 bits for c = 5) and never an exact equation
// in a member's share. Consequence: a dropout costs nothing as long as t
// of the members asked answer (the coordinator asks all it can reach at
// once, [NewInfluenceRequest]); if fewer than t answer, the client's
// influence for that round is lost — the members that answered refuse any
// retry — and valuation must treat it as missing.
//
// # Wire formats
//
// Everything that travels is a []byte in a fixed, versioned format (see
// wire.go) validated completely before lattigo sees it: parameters
// fingerprint, key instance, level, degree, exact size, and every
// coefficient reduced. Malformed input yields an error wrapping
// [ErrMalformed] (or a more specific sentinel), never a panic. Influence
// ciphertexts and coefficient shares have kinds of their own (6 and 7), so
// neither can be passed off as an aggregate ciphertext or a whole share;
// FuzzInfluenceCiphertext and FuzzCoefficientShare cover their decoders.
//
// Randomness: secrets, encryption noise and flooding noise come from
// lattigo's cryptographically secure PRNG and are not reproducible by
// design; only the common reference polynomial is derived (from the
// instance), so same seed, same public parameters.
package aggregation
