// Package valuation values the participants of a federated-learning round:
// games over coalitions, exact and sampled estimators of the Shapley and
// Banzhaf values, leave-one-out, gradient-based signals, and accumulation of
// per-round values across rounds. It is pure: no network, no disk, no clock
// except the wall time it reports, and no randomness but seeded streams. It
// imports nothing of tally's; models reach it through ParamScorer.
//
// # Games
//
// A Game has n ≤ MaxPlayers (63) players, coalitions are bitsets (Coalition),
// and Utility(S) is a number, higher is better. The federated game
// (NewFederatedGame) is one round: players are the round's clients (or groups
// of clients) and U(S) is the validation score of the global model plus the
// weighted FedAvg of S's updates; U(∅) is the current model. The surrogate
// game (NewSurrogateGame) is its first-order approximation from one scalar per
// client, U(S) = −Σ_S a_i / Σ_S n_i.
//
// With FederatedOptions.LineSearch (the coordinator's default) U(S) is instead
// the best validation score along S's direction Σ_S n_i Δ_i, no further than
// S's own FedAvg step, from the model after the server's own best step along
// what it already knows (Known, the previous global change), with Known
// projected off every update (KnownStep, ProjectOff). The FedAvg step rewards
// dilution whenever the clients' steps overshoot, as they do under local
// momentum: exact Shapley paid a random free rider +0.50 to +0.78 over 20 demo
// rounds (TestRealModelLineSearchRandomFreeRider). Under the line search a
// zero update and an echo of the previous change can only shorten a
// coalition's cap, so their value is ≤ 0 (exactly 0 while no cap binds); a
// random update changes the direction and costs curvature, and helps only by
// chance alignment with the gradient (about 1/√P of its norm for P
// parameters). Uncapped, that chance paid a random free rider > 0 on 3 of 10
// seeds of the small-step free-riders-bc8; with the cap, on none. Alone, a
// lucky random direction is still worth a little: with nothing known (round
// 0) the demo's random free rider was valued +0.0153 and +0.0031 on seeds 5
// and 6 of 1–10. So with FederatedOptions.Signal (the validation gradient
// at the base, off Known; the coordinator and the experiments pass it) an
// update whose cosine with it lies inside the band a random direction falls
// in, |cos| ≤ NoiseKappa/√P (κ = 3: a random direction lands outside with
// probability 0.27%), counts as a zero update: it carries nothing the
// server could not draw itself. Measured, with the band in every round, on
// the demo's 20 rounds, seeds 1–6: 98% of the random free rider's updates fall inside, and 6–33% of an
// honest client's, all in later rounds, where an update's component along
// the validation gradient is small; every honest update of round 0 is
// outside (|cos| ≥ 0.80). So the band applies only with nothing known (the
// first round, where the gradient is largest and a chance alignment is
// worth most) and only for P ≥ 36 (NoiseBandMax); in later rounds the
// server's own step along the previous change comes first and a random
// update's chance alignment netted below 0 on each of seeds 1–10.
// Seeds 1–10 then value the random free rider −0.082 to −0.016
// (TestDemoRandomFreeRider in experiments). The test is a detector, not a
// proof: a random direction drawn within a subspace where the gradient
// lives, or a lucky draw (0.27% a round), passes it.
//
// The projection game (NewProjectionGame, projection.go; issue 16) values
// coalitions from what a committee may decrypt: m public vectors v_j (the
// round's decrypted total, validation gradients at three points of its
// line, min(classes, 5) per-class gradient parts, all off the known
// direction: ProjectionVectors) and each client's m scalars
// ⟨n_i·Δ_i, v_j⟩. With the Gram matrix G of the vectors public, the
// projection of a coalition's step onto their span is V·G⁺·Σ_S s_i, so
// every coalition is known from n·m scalars, and U(S) is the line-search
// utility above with the TRUE validation score at the projected step.
// When the updates lie in the span it is the plaintext line-search game
// (TestProjectionGameIsPlaintextInSpan). The idea is a low-rank
// (subspace) approximation of each update before a line search on the
// true loss, as in subspace and Krylov methods of optimisation (Conn,
// Gould, Sartenaer & Toint, "On iterated-subspace minimization methods
// for nonlinear optimization", 1996) and the projected-gradient
// sketches of update compression (Vogels, Karimireddy & Jaggi,
// "PowerSGD", NeurIPS 2019); here the subspace is spanned by vectors the
// server computes itself, so only inner products are released.
//
// Replicas (redundant.go): copies of one update are valued as one player whose
// value they share (UpdateReplicas from update distances within a round,
// ScalarReplicas from influence scalars, MergeReplicas, SplitReplicas), after
// Ohrimenko, Tople & Tschiatschek ("Collaborative machine learning markets with
// data-replication-robust payments", 2019) and Han, Wooldridge, Rogers,
// Ohrimenko & Tschiatschek ("Replication robust payoff allocation in
// submodular cooperative games", IEEE TAI 2022), who show that replicating
// one's data can raise one's Shapley share. Within a round only near-exact
// copies can be told from honest iid clients: a copy that trains with its own
// shuffles is as close to honest clients in one round as it is to its
// original. Redundancy sums the distances over the job's rounds, where the
// shuffle noise averages out, and JobReplicaValues values the copies it finds
// as one player in every round of the job when the values are settled
// (JobCopyDistance: after 10 rounds the retrained copy of
// duplicates-retrained-bc5 was within 0.24 of its original on seeds 1–5,
// every other pair of breast cancer and digits 0.26 or more apart; the margin
// is thin, and on a 6-parameter model honest updates are closer than that).
// Influence scalars are one number per round, too few to see a retrained
// copy: influence mode recognises bit-identical copies only.
//
// Sybils, one holder's rows split among identities, are no closer to each
// other than independent holders: similarity cannot find them. They gain
// because the federated utility saturates, so that each identity's Shapley
// value hardly depends on its rows; Han et al. characterise the robustness
// of semivalues to replication by their weights over coalition sizes, the
// Shapley value being exploitable, but the semivalues tried in its place
// (Banzhaf, Beta(4,1)) were unstable here (redundant.go). What a split conserves is
// the declared rows, so CapPerWeight caps each player's value per row at
// the rate that the rows of the players holding at least twice as many
// (CapRatio) earn together: the split client of sybil-bc5 gained −0.016 to
// +0.010 of the total share under exact Shapley (seeds 1–10) instead of
// +0.117 to +0.198 (seeds 1–5). It cannot catch a Sybil whose parts claim
// as many rows as the whole (weights are declared, bounded at enrolment,
// not proven), nor one indistinguishable from independent holders of its
// size; and it caps honest small holders alike (size-skew-bc5, sizes
// 2:3:4:5:6: Spearman against uncapped Shapley 0.72 on average over seeds
// 1–10, 0.20 at worst).
//
// An Evaluator memoises a game, runs utility calls on a bounded worker pool,
// computes each coalition once even under concurrent requests, and counts
// calls. Estimators accept an *Evaluator to share its cache within a round.
//
// # Methods (NewEstimator names)
//
//   - "exact-shapley": the Shapley value (L. S. Shapley, "A value for n-person
//     games", 1953) from all 2^n utilities. Exact up to floating-point
//     rounding; the only method that satisfies efficiency, symmetry, null
//     player and additivity exactly. Refused above MaxExactPlayers (20) with
//     ErrTooManyPlayers. For weighted majority games it is the Shapley–Shubik
//     index (Shapley & Shubik 1954).
//   - "exact-banzhaf": the Banzhaf value (J. F. Banzhaf III, "Weighted voting
//     doesn't work", 1965), β_i = 2^{1−n} Σ_{S∌i} U(S∪i) − U(S), from all 2^n
//     utilities; same bound. Not efficient: the values need not sum to U(N)−U(∅).
//   - "loo": leave-one-out, U(N) − U(N∖i), n+1 evaluations. Known failure: a
//     player whose data is duplicated by another gets ≈ 0 (removing one copy
//     changes nothing), and so do players that are individually redundant but
//     jointly essential; LOO is also not efficient. Under encryption it is
//     forbidden on decrypted coalition sums (the difference reveals an update).
//   - "monte-carlo": permutation sampling (Castro, Gómez & Tejada, "Polynomial
//     calculation of the Shapley value based on sampling", Computers &
//     Operations Research 36(5), 2009). Unbiased; each value is a mean of
//     independent marginal contributions, so its standard error (reported)
//     falls as 1/√m in the number of permutations m and the central limit
//     theorem gives ≈95% coverage at ±2 SE. The variance is that of the
//     marginals, which is large in games with a few pivotal coalitions
//     (majority games): expect many permutations there.
//   - "tmc": truncated Monte Carlo (Ghorbani & Zou, "Data Shapley: Equitable
//     Valuation of Data for Machine Learning", ICML 2019). Along a permutation,
//     once |U(N) − U(prefix)| < Truncation·|U(N) − U(∅)| the remaining
//     marginals are set to 0 without evaluation (the tolerance is relative to
//     the round's gain rather than to |U(N)| as in the paper, so that adding a
//     constant to the utility changes nothing). Known failure: truncation is
//     biased whenever later players still move the utility (non-monotone
//     games, noisy scores, a harmful and a helpful player arriving late and
//     cancelling). Only the sum of a permutation's truncated marginals is
//     bounded (by the tolerance times the gain); single values can be biased
//     by more, and the reported standard error does not include the bias.
//   - "gtg": GTG-Shapley (Liu, Chen, Yu, Liu & Cui, "GTG-Shapley: Efficient and
//     Accurate Participant Contribution Evaluation in Federated Learning", ACM
//     TIST 13(4), 2022): between-round truncation (if |U(N) − U(∅)| ≤
//     RoundTolerance·|U(N)| the round is valued 0 for all, after 2
//     evaluations), within-round truncation as in tmc, and guided permutations
//     (permutation t is led by player t mod n, so each player's stand-alone
//     marginal, the one truncation never skips, is sampled equally). Same bias
//     as tmc; the standard error treats the guided permutations as independent,
//     which overstates it slightly (stratification lowers the variance).
//   - "banzhaf": the Banzhaf value by maximum sample reuse (Wang & Jia, "Data
//     Banzhaf: A Robust Data Valuation Framework for Machine Learning", AISTATS
//     2023): uniform coalitions, each used for every player as a sample of
//     E[U(S) | i∈S] or E[U(S) | i∉S]. Unbiased (given both sides sampled);
//     Wang & Jia show it has the largest safety margin against utility noise
//     among semivalues, which is why it suits noisy validation scores.
//
// Vector methods, not games (NewEstimator refuses them with ErrVectorMethod):
//
//   - "cgsv": CosineToAggregate, the cosine between each update and the
//     aggregate (Xu, Lyu, Ma, Miao, Foo & Low, "Gradient Driven Rewards to
//     Guarantee Fairness in Collaborative Machine Learning", NeurIPS 2021). Xu
//     et al. show the cosine approximates a Shapley value of a gradient game to
//     first order; it is scale-free, so it cannot see that a small update
//     pointing the right way is worth less than a large one.
//   - "influence": Influence, φ_i = −⟨∇L_val, n_i Δ_i⟩/Σn (in the spirit of
//     DIG-FL: Wang, Zhang, Li, You & Cheng, "Efficient Participant Contribution
//     Evaluation for Horizontal and Vertical Federated Learning", ICDE 2022).
//     Needs one gradient and one inner product per client.
//
// First-order surrogate accuracy: with g = ∇L_val(w) and the aggregate step
// δ_S, L(w+δ_S) = L(w) + ⟨g, δ_S⟩ + O(‖δ_S‖²·λ_max(H)); the surrogate game
// drops the second-order term, so it ranks clients well when local steps are
// small relative to the loss curvature (late rounds, small learning rates) and
// can misrank when an update overshoots (early rounds, large steps), where it
// rewards a large step along the gradient that in fact increases the loss.
//
// # Stopping rules
//
// Sampled methods stop at the first of: Samples drawn; Budget distinct
// evaluations (never exceeded: batches shrink so the worst case fits);
// every standard error ≤ SETarget; ranking unchanged for RankStable
// batches. The SE and rank rules wait for MinSamples. A sample that only
// hits the cache spends no budget, so when the budget is the only rule two
// more rules make sure the run ends: all 2^n coalitions used ("exhausted"),
// or StallSamples (1,000) samples in a row, counted in whole batches, that
// used no new coalition ("stalled"). Stalling is how tmc and gtg end when
// truncation leaves fewer coalitions reachable than the budget allows (any
// budget above what their truncated prefixes reach), and how monte-carlo and
// banzhaf end on the long tail of the last few unused coalitions; a stalled
// run has spent less than its budget, and Evaluations says how much. Batches
// have a fixed size, independent of the worker count, and whether a batch
// used a new coalition does not depend on the order the workers ran it in,
// so a seed gives the same bits, and stops at the same sample, on any
// machine. Measured on a synthetic 10-client federated game
// (BenchmarkToSpearman), 9 of 10 seeds rank like exact Shapley (Spearman ≥
// 0.95) after about 17% of exact's 1,024 evaluations for gtg, 36% for
// monte-carlo and 40% for tmc.
//
// # Across rounds
//
// Accumulator sums per-round values per client (FedSV: Wang, Rausch, Zhang,
// Jia & Song, "A Principled Approach to Data Valuation for Federated
// Learning", 2020), with an optional freshness decay; SplitByWeight shares a
// group's value among its members. Spearman compares rankings.
package valuation
