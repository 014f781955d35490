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
//     parameter, nᵢ, into ceil((P+1)/slots) ciphertexts under pk, and
//     [NewSubmission] signs, with the client's Ed25519 identity key, its
//     statement over them: (job, round, attempt, key instance, nᵢ, per
//     block the SHA-256 of c₀ and of c₁).
//   - Coordinator. [Accumulator] adds each ciphertext on arrival and keeps
//     one running sum per block; [Accumulator.Finalize] gives the
//     [Aggregate] with a SHA-256 digest per block.
//   - Decryption. A [DecryptRequest] names the key, purpose, round,
//     attempt, digests, the c₁ digest of each block, contributors, exactly
//     t participants, the retry counter and (influence) the multiplier
//     vector's digest. Each participant runs two checks before any share:
//     it verifies that the ciphertext is what the request says
//     ([Member.VerifyAggregate], "What members check" below), and admits
//     the request into the job's decryption transcript under its [Policy]
//     ([Member.Admit], "The decryption transcript" below); only a request
//     that passed both gets c₁·λᵢ·s̃ᵢ + eᵢ
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
//   - Batched scalars (batch.go, wire form [CoefficientBatchVersion]). A
//     round's influence requests — one per client and committed vector,
//     each its own request and its own transcript entry — travel in one
//     decryption task: a member runs [Member.VerifyAggregate] on each,
//     admits them together with [Member.AdmitBatch] (consecutive entries,
//     in the coordinator's order, one signature of the last head, which
//     chains every entry of the batch) and answers with one share per
//     request. A request that fails a check refuses the whole batch by its
//     named error: the chain makes any partial answer a prefix ending
//     where the coordinator put the bad request, and an honest
//     coordinator, which checks every request under the same rules before
//     it publishes, sends none (TestAttackBatchOneForged,
//     TestBatchRestartMidBatch).
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
// Decryption holds against a coordinator that deviates in what it asks
// members to decrypt — it may relabel, forge or re-randomise ciphertexts,
// invent contributors, relabel rounds and attempts, choose participant
// sets and show members different transcripts — with clients semi-honest
// and fewer than t committee members colluding with it (docs/DESIGN.md
// §3), given a pinned manifest ([MemberKeys]) and, for the job-wide rules
// under a forked transcript, 2t − c greater than the number of colluding
// members ("Fork resistance" below). Then: no update is ever decrypted;
// the coordinator learns only the aggregates that t members agree to
// decrypt; before any share a member runs two checks, verification
// ([Member.VerifyAggregate]) and admission into the job's transcript
// ([Member.Admit]), and refuses (1) an
// aggregate of fewer than k contributors (default 3; the one exception,
// at most L scalars per client per round, is described under
// "Influence"), (2) a ciphertext digest that is already in the job's
// transcript, by any participant set, (3) a ciphertext that does not
// hash to the named digest, and (4) a contributor set that differs from
// one decrypted for the same round — any attempt, any key instance — by
// fewer than k clients (decrypting S and S∖{i} would reveal client i by
// subtraction), (5) a ciphertext that is not the sum of its contributors'
// signed ciphertexts, or an influence ciphertext that is not the product
// of the client's signed ciphertexts with a committed vector ("What
// members check"), and (6) a c₁ already decrypted under another c₀.
// Rules (2), (4), (6) and the scalar and vector budgets are applied to the
// whole transcript, not to what one member served ("The decryption
// transcript"). Shamir shares are not verifiable (the
// commitments bind the public-key shares, not the Shamir polynomials): a
// malicious member can make key generation fail, not leak.
// Up to c − t members may vanish after key generation; the public key needs
// all c shares, so a member lost during key generation means a re-key with
// a new epoch.
//
// # What members check
//
// Before any share of an aggregate (purposes total, group, moments, …)
// [Member.VerifyAggregate] receives each contributor's signed [Submission]
// and the c₁ of each of its block ciphertexts (the coordinator keeps them
// in a [SubmissionStore] until the round's decryptions are done, the c₁
// in a spill file, [NewSpillingSubmissionStore], each checked with a
// CRC-32C when read back, [ErrSpillCorrupt], and so are the clients'
// influence ciphertexts, [Influence.SpillTo], [ErrProductSpillCorrupt]; it
// refuses an upload whose statement does not verify under the client's
// enrolled key, or does not cover its ciphertexts) and checks: every
// contributor is a participant of the pinned manifest
// ([ErrUnknownContributor]), its signature verifies under that key
// ([ErrSubmissionSignature]), every statement names this job, round,
// attempt, key instance and block count, no two contributors share an
// identity key ([ErrSubmissionMismatch]), there are at least k of them,
// every fetched c₁ hashes to its signed digest, and the aggregate's c₁ is
// exactly Σᵢ c₁ᵢ modulo each prime, canonical residues ([ErrNotASum]). A
// retry adds an encryption of zero derived from a public seed (SHA-256 of
// key, purpose, round, attempt, contributors, block and retry counter,
// [Encryptor.RerandomizeAggregate]) under the collective key the member
// certified; the member recomputes that zero's c₁ and includes it. Such a
// zero is known to the coordinator, as the drawn one was; what it can no
// longer do is choose it. The request names each block's c₁ digest
// ([DecryptRequest.C1], [C1Digest]); the member checks them against the
// ciphertexts ([ErrDigestMismatch]) and they go into the request's
// transcript entry, where [Transcript.Check] refuses a c₁ digest already
// in the chain ([ErrAlreadyServed]), since c₀ is not checked and two
// shares of one c₁ under different participant sets give the key share
// ("Dropouts" below): one c₁ is decrypted once, by one participant set,
// job-wide, and the rule survives restarts with the persisted transcript.
// [Member.DecryptShare] and [Member.DecryptCoefficientShare] serve only a
// request that was verified ([ErrNotVerified]) and admitted
// ([ErrNotAdmitted]), and [Member.Admit] admits (and signs) only a
// verified request ([ErrNotVerified]), so a member's signature of a
// transcript head is never had for an entry it did not check
// (TestAttackAdmitWithoutVerification); the client verifies first, then
// admits and persists, then shares. This closes, with honest members
// (attack tests TestAttackSingleUpdateAsAggregate, TestAttackRelatedC1):
// one update relabelled as an aggregate of k with invented or borrowed
// names, a coordinator-chosen c₁ (r·c₁, a large constant that reads λᵢs̃ᵢ out of
// one share, a chosen "encryption of zero") and a verified c₁ reused under
// another c₀ and participant set.
//
// c₀ is not checked: the decryption is c₀ + c₁·s, and the shares depend on
// c₁ alone, so a forged c₀ shifts only what the coordinator itself
// obtains, by an amount it chose. Fetching c₁ alone halves what a member
// downloads.
//
// Influence (item 2). ∇L_val goes to members in the clear with the
// request, whose Gradient field is its [GradientDigest] (so part of the
// request ID), and the digest is in the round's receipts. The member
// checks the vector against the digest and that it is one of at most L =
// [PolicyConfig].MaxScalarsPerRound distinct vectors of that (key, round)
// ([ErrGradientMismatch]; the transcript applies the same bound job-wide,
// below), so that a valuation mode releasing L scalars per client and
// round, each the product with its own vector, fits; it encodes it exactly as
// [NewInfluence] does, and recomputes Σ_b c₁ᵢ,b·pt(g_b) from the client's
// signed c₁ ([ErrProductMismatch]; TestAttackInfluenceVector). Given the
// vector with the round's total, it derives every contributor's product in
// the same pass and keeps only its digest, so the influence requests that
// follow fetch nothing (TestVerifyInfluenceReusesTotalPass); the state
// kept per round is a few dozen bytes per contributor and product, one
// encoded vector per committed vector, and a copy of every c₁ it fetched
// and checked (at most 64 MiB, beyond which c₁ are fetched and checked
// again), dropped when the next round starts: a client's products with the
// other vectors (projection mode) fetch and hash its c₁ once, and a
// product computed for the request itself is compared byte for byte with
// the ciphertext's c₁ rather than both hashed
// (TestAttackProductAfterCachedC1: a forged second product of the same
// client is still refused). It also keeps a copy of each influence
// ciphertext it verified (at most 32 MiB) until it serves it, and
// [Member.DecryptCoefficientShare] compares the ciphertext it is given
// with that copy instead of hashing it again; any other ciphertext is
// hashed (TestAttackCoefficientShareOtherCiphertext).
//
// Cost (BenchmarkVerifyAggregate, default parameters, one block, 2-core
// machine shared with other jobs; BENCHMARKS.md): with 8 contributors a
// member spends ×1.1–1.7 the CPU of an unverified share (21 ms against
// 19 ms once both paths admit into the transcript) and downloads 3.9 MB
// instead of 0.79 MB (×5.0); with 1,000 contributors ×78–83 (1.0–1.5 s)
// and 394 MB (×501), per block: every c₁ is fetched, hashed and added.
// The coordinator keeps half of every client ciphertext until the round's
// decryptions are done. A spot check of random coefficient positions
// against Merkle commitments would not be sound here: changing c₁ in a
// single coefficient is enough to read a key share, and s samples of the
// N·L coefficients miss that change with probability 1 − s/(N·L). What
// would scale is spreading the check over the contributors (each checks
// its own path through a tree of partial sums and signs the root) or
// over edges; neither is built.
//
// What remains. k−1 colluding real participants (or real clients that
// submit zero updates) with one honest client still make an aggregate of
// k that reveals that client's update: that is inherent to any
// k-threshold rule. Without a pinned manifest ([MemberKeys] nil) the
// contributors' keys are those their submissions carry, i.e. the
// coordinator's word, and invented contributors with keys of its own pass;
// only a manifest closes attack (a). A member cannot tell whether the
// multiplier vector is really ∇L_val at the round's model: it can only
// hold the coordinator to at most L vectors per round, in the open,
// committed in the transcript and the receipts. Verification recomputes
// every sum in full (no spot check), so its cost grows with the
// contributors (above). c₀ is never checked (by design, see above). The
// transcript's job-wide rules rest on the fork-resistance condition below.
//
// Open, and the largest gap: a participant that encrypts dishonestly.
// Everything above holds with clients semi-honest, i.e. encrypting as
// [Encryptor] does. Nothing shows a member that a client's ciphertext is
// a well-formed encryption (c₁ = u·a + e₁ with u and e₁ short): c₁ of
// either kind looks uniform. One participant colluding with the
// coordinator can upload, signed as its own, an honest encryption with a
// large constant Δ added to c₁. Members verify the round's sum (it is the
// sum of the signed uploads) and share; the coordinator combines the
// shares itself and obtains c₀ + c₁·s + Δ·s, in which Δ·s (Q/64 times
// each coefficient of s) stands far above the message and the flooding,
// so it reads the collective secret key s and decrypts any client's
// upload alone, in every round of the job. Flooding protects s only from
// an honest ciphertext's short noise. TestThreatCraftedC1RevealsTheKey
// runs it end to end (test parameters): the members accept, the honest
// [Decryptor.CombineBlock] refuses the result (ErrDecryption), and the
// key read from one crafted upload decrypts another client's upload to
// within 3.2e-13. A coordinator alone cannot do this, since members
// check that c₁ is the sum of the client-signed c₁ᵢ (attack
// TestAttackRelatedC1); it needs one listed participant, which an ML
// team that both runs the coordinator and signs the manifest can list.
// Without a pinned manifest ([MemberKeys] nil) it needs nobody: it
// invents the contributor and signs the crafted upload itself.
// Closing it needs a proof of well-formedness per ciphertext (a lattice
// zero-knowledge proof of short u, e₀, e₁, or a cut-and-choose over
// several encryptions) checked by the members before they share; tally
// has neither.
//
// # Edges
//
// A keyless edge aggregator (package edge) sums some of a round's clients
// with its own [Accumulator] and hands the coordinator the partial, which
// has exactly a client ciphertext's wire form (c₀ rounded, one row fewer
// than c₁), with each client's signed [Submission] and c₁ rows. The
// coordinator adds it with [Accumulator.AddPartial] (validated first by
// [Accumulator.CheckPartial]) and keeps the c₁ rows with
// [SubmissionStore.AddC1]; an influence product the edge computed is taken
// whole by [Influence.AddProduct], already lifted, so that [Influence.Finalize]
// does not lift it again. Nothing changes for members: the evidence is
// the same per-client statements and c₁, and an edge that alters its
// partial, leaves a client out while counting it, or alters a client's c₁
// consistently in both is refused with [ErrNotASum]; an altered product
// with [ErrProductMismatch]. A shifted c₀ passes, as it does from a
// coordinator (attack tests in edge_test.go).
//
// # The decryption transcript
//
// Every decryption request of a job — whole aggregates, the feature
// moments, influence coefficients, failed attempts included — is an entry
// of a hash chain ([Transcript], transcript.go): (seq, previous head, job,
// key instance, round, attempt, purpose, request ID, digests, contributor
// set, participants, scalars, the committed vector's digest of an
// influence request, and the c₁ digest of each block of a whole one),
// whose head each participant signs with its
// Ed25519 identity key when it answers (a batch of influence requests:
// the head after its last entry, which commits to the batch's other
// entries through the chain; those carry no signature of their own). The coordinator keeps the chain
// (persisted in its state file) and hands each member, with a decryption
// task, the entries it has not seen. After [Member.VerifyAggregate] (the
// c₁ digests and the vector in the entry are the ones the member checked),
// [Member.Admit] checks that they
// extend the member's own head ([ErrTranscriptFork]), that every signature
// they carry is a participant's under its pinned identity key
// ([ErrTranscript]), and applies the rules of [Transcript.Check] to the
// request as the chain's next entry, over the whole chain: a digest, and a
// c₁ digest, is decrypted once, by one participant set
// ([ErrAlreadyServed]); no two
// whole decryptions of one round — which is one global model: retried
// attempts and re-keys included — have contributor sets S, T with
// 0 < |S∖T| < k or 0 < |T∖S| < k ([ErrSetDifference]); at most L =
// [PolicyConfig].MaxScalarsPerRound influence scalars per client and
// round ([ErrScalarBudget]), at most L distinct committed vectors per
// round ([ErrGradientMismatch]) and one decryption per client, round and
// vector ([ErrAlreadyServed]); and rounds never go back ([ErrStaleRound]),
// so that no scalar is served for an old round and relabelling a request
// as a later round burns that round of the job. Only then is any share
// computed; the client persists the transcript beside its key file
// before the share leaves, so a restarted member resumes it, and a member
// of a new committee receives the chain from genesis and checks it whole.
// An entry the coordinator published that no participant answered carries
// no signature and is accepted: an entry can only add to what the rules
// forbid. Attack tests: TestAttackScalarsByRelabelling (c),
// TestAttackRetryLeaveOneOut (e, also after a re-key, a member restart and
// for a new committee), TestAttackSameDigestTwoParticipantSets (f).
//
// Fork resistance. A coordinator that deviates can show members different
// chains, omitting entries from some. A member always has its own entries,
// so an omission is caught when the two participant sets of conflicting
// requests share an honest member: two sets of at least t of the c
// members share at least 2t − c, so the rules hold job-wide when
// 2t − c > (number of members colluding with the coordinator). The job's
// default threshold, ⌊c/2⌋ + 1, gives 2t > c for every c (c = 5, t = 3:
// any two sets share a member), which covers a coordinator with no
// colluding member; a job that sets committee.threshold with 2t ≤ c gives
// up this guarantee and is protected only against a coordinator that
// shows every member the same chain (then every member sees every entry,
// and the rules hold at each). A forked chain cannot be joined again: the
// next time a member is shown the other branch it refuses with
// [ErrTranscriptFork]. Receipts carry the transcript head, and clients
// check that it is on the chain they saw (client/receipts.go), which
// exposes a coordinator that shows clients another chain than members.
//
// # Parameters and security
//
// [DefaultParameters]: LogN 14 over the conjugate-invariant ring (16,384
// real slots), Q = three 60-bit primes, P = one 61-bit prime, scale 2^104,
// 53-bit encoder, uniform ternary secrets, error σ = 3.2, and flooding
// noise derived from [DefaultFlooding] (below). log₂(QP) ≈ 241 bits. The
// Homomorphic Encryption Standard (Albrecht et al., 2018, Table 1,
// uniform ternary secret) gives 128-bit classical security for N = 2^14 up
// to log₂(QP) = 438 (192-bit up to 305); this package relies on that bound,
// applied to the conjugate-invariant ring of dimension N as argued by Kim
// and Song ("Approximate Homomorphic Encryption over the
// Conjugate-invariant Ring", ICISC 2018). [NewParameters] refuses sets
// above the table's bound unless Insecure is set, which only tests do.
// The third prime and the scale are what the flooding bound costs: the
// previous set (two primes, scale 2^60, σ = 2^30) could not carry it.
//
// Wire cost (BenchmarkClientEncrypt, BenchmarkDecrypt, 2-core x86-64
// shared with other jobs, load 12–17, so times are ranges over runs
// alternating with the previous set): a ciphertext is 655,360 bytes of
// coefficients, c₀ rounded over two primes and c₁ over three (40.6 bytes
// per parameter; 48.8 with c₀ whole, 32.5 with two primes); a whole
// decryption share, divided by the last prime, 16.3 bytes per parameter
// per member (24.4 with three primes); a coefficient share 104 bytes
// (96). See "Wire formats". The times below were measured with c₀ and
// shares whole; on 2 December 2026 (load average 31) the runs with and
// without rounding alternated within a factor of 3 of each other either
// way, too loaded to tell a difference. Encryption encodes below 2^61 and
// shifts to the scale (lattigo's encoder goes through big.Float above
// 2^64): 1.0–2.1 s per 1M parameters on one core, against 0.9–1.9 s. A
// member's share takes 0.9–1.6 s per 1M parameters (0.4–0.6 s: the
// flooding noise is three convolved Gaussian samples per coefficient);
// combining and decoding 2.0–3.1 s (2.3–3.2 s: the combiner drops the
// last prime before decoding, see [Decryptor.CombineBlock]).
//
// Measured precision (TestDefaultParametersPrecision, BenchmarkDecrypt):
// with the default set, the decrypted average of 8 clients (weights 5 to
// 60,000, values in [−1, 1]) differs from plaintext FedAvg by at most
// 2.7e-12, i.e. about 1.8e-7 on the sum Σ nᵢ·Δᵢ; over 1M parameters and 3
// clients (weights 100, 200, 300) with 3-of-5 decryption it is 4.7e-10 to
// 5.4e-10 on the average (2.4e-9 to 2.9e-9 with the previous set). Tests assert 1e-6 on the average. The demo (breast-cancer,
// 8 clients, 20 rounds, seed 1) gives per-round validation losses within
// 4.5e-8 of the run without encryption (9.8e-7 with the previous set),
// and the same accuracies; clients upload 6.0 MiB a round (4.0). With c₀
// and shares rounded (the flooding is random, so figures move between
// runs): 5.0e-8 and 5.9e-8 in two runs, against 6.8e-8 for a run of the
// build before them on the same day, the same accuracies, 5.0 MiB a round; the
// decrypted average of BenchmarkDecrypt is off by 4.6e-10 (4.4e-10 to
// 5.7e-10 before).
//
// # Noise flooding
//
// What it hides. A decrypted value is m + e + Σ eᵢ: the message, the
// ciphertext noise e (each contributor's fresh-encryption noise, which
// contains r₁·s and so depends on the secret key) and the flooding noise eᵢ
// of the shares. Without eᵢ the coordinator would learn e, i.e. linear
// equations in the key (Li and Micciancio, "On the Security of
// Homomorphic Encryption on Approximate Numbers", EUROCRYPT 2021), and
// a threshold decryption would not be simulatable from its output.
//
// Goal and bound. Statistical indistinguishability: over the whole job,
// the statistical distance between everything the coordinator sees
// together with t−1 colluding members (every share, every combined value)
// and a simulation that knows only the released values is at most 2^-λ,
// λ = 40 by default (he_params.flooding.security). That covers key
// recovery and the IND-CPA-D notion of Li and Micciancio for the
// decryptions the job makes. The bound is the smudging lemma (Asharov et
// al., EUROCRYPT 2012) in its Gaussian form: for M released values each
// shifted by a ciphertext noise |eⱼ| ≤ B, the Kullback–Leibler divergence
// between the flooded values and flooding alone is at most M·B²/(2σ²),
// and Pinsker's inequality bounds the statistical distance by √M·B/(2σ);
// hence σ = 2^(λ+1)·√M·B for 2^-(λ+2), with B = k·σ_e,
// k = √(2·ln(2M·2^(λ+2))) (the Gaussian tail, again 2^-(λ+2)). Aggregates
// and influence scalars each get both terms, and the samplers' truncation
// the rest. A Rényi-divergence argument (Bai, Langlois, Lepoint, Sakzad,
// Stehlé, Steinfeld, ASIACRYPT 2015) would allow σ ≈ 10·√M·B, about 2^31
// here, but only against search problems (recovering the key), not
// against learning something about the individual updates; and Li,
// Micciancio, Schultz and Sorrell ("Securing Approximate Homomorphic
// Encryption Using Differential Privacy", CRYPTO 2022) prove that
// IND-CPA-D needs Gaussian noise growing with the statistical security
// level, with nearly matching lower bounds. So the bits are paid.
//
// What is counted ([FloodingConfig], caps the members enforce from their
// transcript, failing with [ErrFloodingBudget], and NewJob checks against
// the committee and enrolment): every coefficient of a decrypted block is
// released (the coordinator gets the whole polynomial, not only the used
// slots), so aggregates count M = decryptions × N × c; influence counts
// scalars × c (a member counts what it serves, each release takes t ≥ 1
// of the c members, so the job releases at most c/t ≤ c times a member's
// count). σ_e comes from [Parameters.FreshNoiseVariance] (per
// contributor, for a committee of up to flooding.committee) and
// [Parameters.InfluenceNoiseVariance] (gradient encoded at most 2^26,
// up to flooding.blocks blocks); TestCiphertextNoise measures both and
// checks that the model does not underestimate them (aggregate of 8 under
// a 5-member key: 2^8.07 rms, model 2^8.37; influence scalar: 2^31.57,
// model 2^32.37).
//
// Who adds it. Each participant adds all of σ, not a 1/√t part: with t−1
// colluders, one honest share must hide e alone. A whole share carries
// λᵢ·s̃ᵢ, so its noise is not scaled. A coefficient share carries s̃ᵢ and
// the coordinator weighs it: knowing the colluders' s̃ⱼ, it reads each
// honest share as ⟨a, s⟩ with noise λ_{h,C}·e_h, and combining them leaves
// σ/A(c, t) with A = max_C √(Σ_{h∉C} λ_{h,C}^-2); so members flood with
// A·σ ([Parameters.InfluenceFloodingSigma]; A(5, 3) = 6.8, A(12, 6) = 2^9.1).
//
// Default bound ([DefaultFlooding]): λ = 40, 2^12 block decryptions, 2^16
// scalars, aggregates of up to 1,024 clients, influence over up to 64
// blocks, committees up to 12: σ = 2^71.6 on whole shares, a target of
// 2^90.0 on scalars (2^92.8 per member for c = 5, t = 3). With the measured
// noise of the test above, the bound would need 2^67.2 and 2^85.6; the
// previous σ = 2^30 left margins of 2^21.9 and, after A(5, 3), 2^-4.3.
// [NewParameters] refuses a bound whose slot noise with a whole committee
// exceeds 2^-20, naming the scale it would need: a job with more
// decryptions (1M parameters for 100 rounds is 6,200 blocks) raises
// flooding.decryptions, at half a bit of σ per doubling.
//
// Sampling. lattigo's Gaussian sampler computes round(σ·z) in float64:
// above 2^53 the low bits of every sample are zero (TestFloodSampler: no
// odd sample at σ = 2^60), so a share would show the low bits of e. The
// flooding noise is instead Σᵢ Kⁱ·yᵢ with yᵢ of σ ≤ 2^26 and K = 2^24
// (Micciancio and Walter, "Gaussian Sampling over the Integers", CRYPTO
// 2017), each level four times K, above the smoothing parameter of KZ.
// Outside the proof: the float precision of lattigo's base sampler, and
// the measured (not derived) rounding term of the noise model.
//
// Noise floor. [Parameters.SlotNoiseSigma] gives the standard deviation of
// the error on each decoded slot of a decrypted sum: the t shares' flooding
// noise (t·σ_f² per coefficient) and each contributor's fresh-encryption
// and encoding noise (far smaller), spread over the slots by decoding
// (variance ×2N for the conjugate-invariant ring) and divided by the scale:
// √(2N·t)·σ_f/Δ ≈ 5.6e-8 for the default set and t = 3.
// TestSlotNoiseSigma measures it within 2% on aggregates of zeros. The
// float64 FFT of encoding and decoding adds round-off relative to the
// block's magnitude, about 2^-51 of its slots' root mean square, on every
// slot ([Parameters.RoundoffSigma]); [Parameters.SlotNoiseSigmaAt] is the
// floor with it. Large values beside zeros (sums of squares near 1e9 of
// breast-cancer areas) put a zero slot at 2,000 times SlotNoiseSigma for
// logN = 10 and 34 times for the default set
// (TestSlotNoiseSigmaLargeMoments), within 1.4 of SlotNoiseSigmaAt. A
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
// Modulus budget. The product of a 2^104 ciphertext with a 2^104
// plaintext cannot be rescaled and still hold aᵢ in Q = 2^180, so the
// gradient is encoded at a small scale Δ_g with 2^25 ≤ max|g|·Δ_g < 2^26,
// and nothing is rescaled: the product is decrypted at the top level with
// scale 2^104·Δ_g. Only the constant coefficient is ever reconstructed, so
// the others may wrap modulo Q; the constant one is
// 2^104·Δ_g·aᵢ/slots ≤ 2^(104+26−14)·‖nᵢΔᵢ‖₁, and it must stay below Q/8
// after the combiner's factor D (below): D·‖nᵢΔᵢ‖₁ ≤ 2^61
// ([Parameters.InfluenceMaxL1]). The brief's realistic maximum (P = 1e5,
// nᵢ ≤ 1e4, |Δ| ≤ 1) is ‖nᵢΔᵢ‖₁ ≤ 1e9 ≈ 2^30, leaving 31 bits, of which D
// takes none when the answering members are consecutive (or evenly
// spaced) and at most 11.5 for any subset of a committee of 12. Beyond the
// budget the combiner refuses (ErrDecryption) when the value lands between
// Q/8 and Q/2 (TestInfluenceBudget); a wrap past Q/2 cannot be detected.
//
// Precision. The dominant error is the rounding of the gradient
// plaintext's coefficients to integers: in the slots it is a perturbation
// δg of standard deviation √(N/12)/Δ_g, so the error on aᵢ is about
// N(0, (√(N/12)·‖nᵢΔᵢ‖₂/Δ_g)²). The encryption noise and the clients'
// own rounding add less than 2^-60·max|g|. The flooding noise is no
// longer negligible: a member's A·σ ("Noise flooding"), weighed by the
// combiner's λᵢ and divided by the scale Δ·Δ_g/slots ≥ 2^115/max|g|, has
// standard deviation σ_m·√(Σλᵢ²)·2^-115·max|g|; for c = 5, t = 3 and
// consecutive answers (σ_m = 2^92.8, λ = 3, −3, 1) that is
// 2^-20.1·max|g| ≈ 8.8e-7·max|g|, below the gradient rounding once
// ‖nᵢΔᵢ‖₂ > 1. It grows with A: committees of 12 with t near 6 would cost
// up to 2^9 more. The tests (committees of at most 5, Σ|λᵢ| ≤ 64) assert
// six standard deviations of the rounding plus six of the flooding,
// |âᵢ − aᵢ| ≤ 6·√(N/12)·2^-25·‖nᵢΔᵢ‖₂·max|g| + 6·σ_m·64·2^-115·max|g|,
// i.e. 6.6e-6·max|g|·‖nᵢΔᵢ‖₂ + 7.8e-5·max|g| for N = 2^14. Measured with the default set (TestInfluencePrecision, P =
// 1e5, gradient entries 1e-4..1, nᵢ ∈ {1, 37, 1500, 1e4}, update entries
// 1e-3..1, 3 of 5 shares): at most 1.4e-6·max|g|·‖nᵢΔᵢ‖₂; with
// independent signs the largest absolute error is 0.24 on aᵢ = −2.4e5 and
// the largest relative error 9.6e-6 (on aᵢ = −179); with update signs
// aligned against the gradient (a descent step, the largest |aᵢ|) 0.54 on
// aᵢ = −1.6e7, relative at most 7.6e-8; the smallest, aᵢ = 27.2 (nᵢ = 1),
// is off by 3.2e-5. Answer sets with D = 1 and D = 6 give the same
// errors.
//
// Coefficient shares. A member returns (c₁·s̃ᵢ)₀ + eᵢ, one word per Q
// prime (104 bytes, against 384 KiB for a whole share): s̃ᵢ its Shamir
// share, eᵢ one Gaussian sample of the flooding σ. It is a single LWE
// sample of s̃ᵢ, the same kind of value as each of the N coefficients of a
// whole share. Policy: purpose "influence" only, one digest, one
// contributor (the one case below k contributors, allowed because one
// scalar is released), the ciphertext hashing to the digest, and at most
// L (default 1) scalars per (job, round, client) ever — across retries,
// attempts, participant sets, digests and re-keys of the job — from the
// transcript, into which the request is admitted before the share leaves. Whole shares ([Member.DecryptShare]) refuse purpose
// "influence", and an influence ciphertext has its own wire kind, which
// DecryptShare does not parse, so it can never be decrypted whole. The
// committee thus bounds what the coordinator learns about a client to one
// scalar per round even from a dishonest request, and since the product's
// c₁ is recomputed from the client's signed ciphertexts and the vector in
// the clear ("What members check"), that scalar is the inner product of
// that client's update with the round's one committed vector.
//
// Computing only what is released. The member computes (c₁·s̃ᵢ)₀ as
// N⁻¹·Σⱼ ĉ₁ⱼ·ŝⱼ mod q from the NTT forms of c₁ and s̃ᵢ (the N
// evaluations of a polynomial of the ring sum to N times its constant
// coefficient), O(N) per prime, no inverse NTT and no sampling over the
// ring, and adds ONE sample of lattigo's
// key-switch error (the Gaussian of σ = √(σ_fresh² + 3.2²), cut at 6σ,
// that multiparty.KeySwitchProtocol.GenShare adds to every coefficient)
// and ONE sample of the flooding noise (the same floodSampler
// convolution), each an integer reduced at every Q prime. Earlier it ran
// GenShare and the flooding sampler over the whole polynomial and kept the
// constant coefficient. The released value has the same distribution: in
// the whole-polynomial computation the constant coefficient is
// (c₁·s̃ᵢ)₀ + e₀ + f₀ with e₀ and f₀ the constant coefficients of the
// error and flooding polynomials, and lattigo's samplers draw each
// coefficient independently from the same distribution, so e₀ and f₀ are
// one sample of each whatever the other N − 1 coefficients were; those
// never left the member, so dropping them changes nothing the coordinator
// can see. The samples are drawn over a ring of degree 16 with the same
// primes (lattigo's samplers fill polynomials), one coefficient used and
// the rest wiped. TestCoefficientShareIsKeySwitchConstant checks that,
// noise set to zero, the share is lattigo's key-switch constant
// coefficient minus that share's own error, and
// TestCoefficientNoiseDistribution the noise's σ.
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
// polynomial, and never an exact equation in a member's share; with t−1
// colluders what is left on the scalar is σ/A(c, t), which the members'
// flooding is sized for ("Noise flooding"). Consequence: a dropout costs nothing as long as t
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
// Ciphertexts (kind 1, version 2). c₁ goes whole, over every Q prime; c₀
// goes rounded to a multiple of the last prime q_L, as c₀' = round(c₀/q_L)
// over the primes below it (encrypt.go), one row of N words fewer: 40
// bytes per slot for the default set instead of 48. Sums of ciphertexts
// are sums of c₀' row by row, so the coordinator adds them as before, and
// parsing lifts c₀' back to q_L·c₀'. Why it is safe: everything the
// coordinator and up to t−1 members see under rounding (c₀' and c₁ of
// every ciphertext, and shares, which depend on c₁ alone) is a function of
// what they would see without it, so the flooding bound ("Noise flooding")
// holds unchanged, sized on the noise of the ciphertexts as encrypted
// (TestCiphertextNoise measures it with c₀ whole). The rounding adds to
// the decrypted message at most q_L/2 per coefficient and contributor,
// uniform and independent of the secret (variance q_L²/12,
// [Parameters.C0RoundingSigma], counted in [Parameters.SlotNoiseSigma]):
// for the default set and 1,024 contributors 2^63.2 rms per coefficient,
// 2^-8.4 of one share's flooding σ. [Parameters.C0Rounded] rounds only when
// that figure for flooding.contributors clients stays below a quarter of
// the flooding σ, else c₀ goes whole: a set whose scale sits below the
// last prime would lose its message (TestC0Rounding: forced, the average
// of 3 clients is off by 29). TestC0Rounding measures the rounding on a
// sum of 8 (2^59.67 rms against a model of 2^59.71). c₁ cannot be rounded
// so: rounding it by 2^d adds r·s, secret-dependent, of variance
// N·c·(2/3)·2^(2d)/12 per coefficient, which the flooding must hide; the
// noise model already counts lattigo's own rounding of c₁ (its division by
// P) at (1 + N·c·2/3)/4, so the bound allows d = 0, and each further bit
// of d costs a bit of σ, hence of scale and of Q, for no saving.
//
// Whole decryption shares (kind 5, version 2). The combiner divides the
// decrypted sum by every top prime the scale exceeds by 2^40 before
// decoding; members send their shares already divided (rounded, after the
// flooding, so the rounded share is a function of the one it stands for)
// and the combiner divides c₀ the same way: the default share carries two
// primes, 16 bytes per slot and member instead of 24, and the t shares and
// c₀ add at most (t+1)/2 at the remaining scale 2^44.
//
// Compatibility. A job's parameters pin these layouts (the parameters ID
// is unchanged; whether c₀ is rounded and the share level follow from
// the parameters). A ciphertext or share in the version-1 layout (written
// by a tally from before, in a state file or on the wire) is refused with
// [ErrWireVersion] (TestCiphertextOldVersionRefused,
// TestDecryptShareRounded); keys, key shares, certificates and the other
// kinds keep version 1 and stay readable. The security level is that of
// the parameters ([MaxLogQP]: log₂ QP ≈ 241 against 438 for 128 bits),
// which the wire form does not touch.
//
// What was measured and left. (1) Residues at their primes' width (60
// bits instead of 64) would give exactly 60/64: 37.5 bytes per slot for a
// ciphertext, 15 for a share; flate finds only part of it (a default
// ciphertext compresses to 0.9917 at level 9 and 1.0001 at level 1: the
// residues are uniform below their prime). Not done: it changes every
// reader of c₁'s bytes (members' sum check in verify.go, the accumulator's
// and influence's add loops). (2) The third prime is what the flooding
// bound costs: Q = 60/60 is refused by [NewParameters] (scale 2^104 above
// Σ log_q − 20 = 100; at scale 2^100 the slot noise is 2^-19.1, above
// 2^-20, and the influence flooding 2^90 does not fit below Q/16 =
// 2^116). (3) Several quantised values per slot would break the per-client
// products that influence valuation needs; not done. The floor: the
// flooding σ = 2^71.6 spread over a slot (×√(2N·c), 2^80.9) plus 20 bits of
// precision fixes the scale at 2^101 or more, and Q at that plus the
// values' headroom (2^16 for weights up to 60,000, and 20 bits of margin):
// at least 137 bits for c₁, 17 bytes per slot even at exact bit width,
// and c₀' 77 more bits. Fewer than 16 bytes per parameter needs less
// flooding, i.e. a weaker bound or fewer releases.
//
// Randomness: secrets, encryption noise and flooding noise come from
// lattigo's cryptographically secure PRNG and are not reproducible by
// design; only the common reference polynomial is derived (from the
// instance), so same seed, same public parameters.
package aggregation
