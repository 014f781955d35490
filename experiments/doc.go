// Package experiments is a reproducible benchmark of tally's valuation
// methods and privacy modes: scenarios of the data-valuation literature run
// as in-process FedAvg, every round valued by every method in every mode on
// the same updates, scored against a ground truth, with cost and leakage
// beside fidelity.
//
// # What a run does
//
// For each scenario (a YAML file under scenarios/) and seed, FedAvg runs once
// for the scenario's rounds: every honest client trains the global model on
// its shard with model.Train from a seeded stream, free riders fabricate
// their update, and the base model, the updates and the weights of every
// round are recorded. Then every round is valued by every method in every
// mode on those same updates, so that differences between methods come from
// the methods alone, and per-round values are summed across rounds (FedSV:
// Wang, Rausch, Zhang, Jia & Song, "A Principled Approach to Data Valuation
// for Federated Learning", 2020).
//
// The ground truth is exact Shapley in plain mode up to 14 players, and above
// a long permutation Monte Carlo run (Castro, Gómez & Tejada 2009) whose
// standard errors are written beside the values.
//
// # Privacy modes without encryption
//
// The modes are those of the coordinator (engine/valuation.go): plain
// (updates in the clear), groups (a seeded partition into groups of at least
// k clients, redrawn each round, each group's value shared by weight),
// influence (the surrogate game on a_i = ⟨∇L_val, n_i·Δ_i⟩) and projection
// (valuation.NewProjectionGame on each client's m inner products with the
// round's public vectors, built as the coordinator builds them,
// valuation.ProjectionVectors). A mode changes
// what the coordinator may decrypt, not the arithmetic of the valuation, so
// the experiments reproduce each mode's valuation in the clear: the CKKS
// aggregation adds noise of about 1e-6 relative to the values (measured by
// the aggregation and coordinator tests), far below every difference these
// experiments report. What a secure-aggregation job would decrypt is counted
// instead: vectors and scalars per run, and the fewest clients behind any
// decrypted vector.
//
// # Homomorphic operations, counted
//
// The homomorphic work such a job would do is counted, not timed, from the
// protocol as the coordinator performs it (engine/secure.go,
// engine/decrypt.go and coordinator/service.go), per round and summed over a run's rounds. With
// the default CKKS parameters (aggregation.DefaultParameters: 16,384 real
// slots) an update of P parameters and its weight take B =
// Blocks(P) = ⌈(P+1)/16384⌉ ciphertexts; the committee is the
// coordinator's default, c = min(5, n) members with threshold t = ⌊c/2⌋+1;
// every one of the n contributors uploads all its blocks and every member
// answers (no timeout, refusal, re-randomisation or re-keying). Per round:
//
//   - plain: the job runs with secure_aggregation none, so nothing is
//     encrypted: 0 of everything;
//   - groups: n·B ciphertext additions into the groups' accumulators, plus
//     B per merge of a group below k into another (the experiments'
//     partition has none; the count follows the coordinator's merge rule
//     anyway); per aggregate decrypted, t·B decryption shares (t members,
//     one per block) and B combinations;
//   - influence: n·B additions into the round's accumulator, n·B
//     plaintext×ciphertext multiplications by the gradient and n·B
//     additions of the products into per-client ciphertexts; the aggregate
//     costs t·B shares and B combinations, and each of the n coefficients
//     a_i costs c coefficient shares (every live member is asked; t of them
//     are combined) and one combination;
//   - projection, with m public vectors: n·B additions into the round's
//     accumulator; after the total is decrypted (t·B shares, B
//     combinations), m·n·B multiplications by the vectors' blocks and as
//     many additions into the n·m products, each decrypted as a
//     coefficient (c shares, one combination).
//
// Key generation and the one-off decryption of feature moments are per
// job, the same in every mode, and not counted. The counts depend on the
// mode only, not the method.
//
// # Scenarios and their sources
//
//   - label noise at rising rates and one client with half its labels wrong:
//     Ghorbani & Zou, "Data Shapley: Equitable Valuation of Data for Machine
//     Learning", ICML 2019 (values should fall as noise rises);
//   - Gaussian feature noise at rising σ and size skew: Wang et al. 2020
//     (FedSV) and Liu, Chen, Yu, Liu & Cui, "GTG-Shapley", ACM TIST 2022;
//   - exact duplicates (symmetry), and a Sybil splitting its data among
//     identities, whose total should not rise: Ohrimenko, Tople &
//     Tschiatschek, "Collaborative machine learning markets with
//     data-replication-robust payments", 2019, and Han, Sun, Chen & Li,
//     "Replication robust payoff allocation in submodular cooperative games",
//     IEEE TAI 2022;
//   - free riders (zero, random with a matched norm, echo of the global
//     change): Lin, Du & Liu 2019 and Fraboni et al. 2021, as CGSV's
//     motivating case: Xu, Lyu, Ma, Miao, Foo & Low, "Gradient Driven Rewards
//     to Guarantee Fairness in Collaborative Machine Learning", NeurIPS 2021;
//   - Dirichlet label skew: Hsu, Qi & Brown 2019;
//   - the cost of exact and approximate Shapley values: Jia et al., "Towards
//     Efficient Data Valuation Based on the Shapley Value", AISTATS 2019.
//
// # Payouts
//
// Every run is also paid, by the code the coordinator settles with
// (JobPay, over ledger/payout): a budget of 1 for the job, its baseline
// share (PayBaselineShare, 0.1) paid every round to the submissions by
// their rows (payout.Period.Baseline), the rest held in escrow and settled
// once at the end in proportion to max(V_i, 0) (payout.Period.Settle), V_i
// the client's credited total (payout.Totals: a round whose values sum to
// ≤ 0 credits nobody and still debits whoever made it worse). The round
// values paid are the run's own, so already capped per row and with
// copies valued as one, as the coordinator values them. From the payouts
// come four columns: pay_spearman (Spearman of the honest clients'
// payouts against the reference totals), freerider_pay (the best-paid free
// rider's payout in baselines: 1 is the baseline only), duplicate_pay (the
// original and its copy together over the original alone, in a second run
// of the scenario with the copies dropped and every other client keeping
// its rows: the "alone" run) and sybil_pay (the split client's gain of
// the budget, baseline included). The command experiments/acceptance
// checks issue 15's acceptance items on these payouts, or on real tally
// simulate jobs.
//
// # Outputs
//
// WriteAll writes runs.csv (one row per scenario, seed, mode and method),
// values.csv (each client's total beside the reference, its credited total
// and its payout; the alone run's too), rounds.csv (every
// round's values, full precision), summary.csv and summary.md (means with 95%
// intervals over seeds) and PNG plots (gonum.org/v1/plot). With
// Options.ExportGames every round's game is written as CSV, one row per
// coalition evaluated. Only the wall-time columns depend on the machine; the
// same seed gives the same values, bit for bit.
package experiments
