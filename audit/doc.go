// Package audit measures what a tally coordinator could rebuild of a
// client's data from what it sees, so that the threat model's claims rest
// on evidence (issue 21). It plays an honest-but-curious coordinator: it
// simulates each release a job makes with the real local training of
// package model (the job's epochs, batch size, learning rate and momentum,
// on rows standardised by the job's federated scaler), runs the strongest
// attack it has against that release, and scores the result beside random
// guessing. `tally audit` (make audit) writes the table, a CSV and
// pictures into audit/results.
//
// # Releases
//
//   - one client's plaintext update Δᵢ (what a coordinator without secure
//     aggregation sees: the baseline), for a client of one row, of a small
//     batch, and of a job-sized shard;
//   - Σ nᵢΔᵢ over k = 2, 3, 5, 10 clients (what `he` decrypts), and the
//     sums over a seeded partition into groups of ≥ k (the `groups`
//     valuation mode);
//   - the influence mode's scalars aᵢ,ᵣ = ⟨∇L_val(w_r), nᵢΔᵢ,ᵣ⟩, one per
//     client and round, over every round of a job;
//   - the projection mode's m scalars ⟨nᵢΔᵢ, v_j⟩ per client and round
//     (6 for breast-cancer, 9 for digits: valuation.ProjectionVectors),
//     over every round of a job, attacked by the least-squares recovery
//     of the update's component in the vectors' span (projection.go);
//   - one client's update and a sum of k under differential privacy.
//
// Run's releases are simulated: it measures what each kind of release
// gives away. What one particular job released is audited by AuditJob
// (`tally audit job`, job.go), below.
//
// # A job's real releases
//
// The engine reports every plaintext the coordinator obtains from a
// decryption, when the shares combine (engine.ActRelease: the transcript
// entry's position and digest, the request, round, purpose,
// contributors, the decrypted values, and the public model and influence
// vector of the round), and `tally coordinator|simulate --release-log`
// keeps them (releaselog.go: JSON lines, each with its SHA-256, fsynced
// one by one; a torn last line is dropped on reopening). CheckReleases
// holds the log to the job's decryption transcript in its state file: a
// release must name an entry by position and digest and agree with it on
// request, round, attempt, purpose and contributors, and an entry the
// round records list as decrypted must have exactly one release; each
// disagreement is named. AuditJob then attacks every release that
// matched, with the attacks below: each decrypted sum of k updates and
// each group sum at the model its round started from (gradient matching
// on the first rounds only, for its cost), and each client's influence
// scalars over all the job's rounds, fitted against that round's public
// vector v. A projection job's scalars (the header records the job's
// valuation settings) are held to their vectors: the round's public
// vectors are rebuilt (JobConfig.Vectors: cmd/tally runs the job's own
// valuer, coordinator.ModelValuer, on the re-derived validation set) from
// the model the round started from, its decrypted total and the previous
// round's change, and each scalar's transcript entry must commit to the
// digest (aggregation.GradientDigest) of one of them, which says which
// v_j it is; a scalar against a vector that is none of them, or a second
// one against the same vector, is a Finding. The rest are attacked per
// client over all rounds as Run attacks the simulated ones
// (projectionjob.go). The metrics need the truth, what each client trained on: for
// a `tally simulate` job it is re-derived from the job's seed
// (dataset.Federate with the settings the log's header records,
// SimulationData), free riders' rows left out of the truth since they
// trained on none; a coordinator's own log is checked against the
// transcript, but its attacks would need the clients' data, which the
// command does not read yet. The feature moments are not attacked: they
// are the pooled sums over every client that become the job's scaler.
//
// # The bring-your-own-model CNN
//
// KindCNN is examples/pytorch/digits_cnn.py, the small CNN a job runs
// through package extmodel (conv 3×3 ×8, pool, conv 3×3 ×16, pool,
// linear; raw pixels, no feature scaling). Its releases are made by that
// script's own trainer, the one a tally client runs with --trainer, and
// attacked in Python with torch autograd by audit/cnn_attack.py, which a
// CNNAttacker (PythonCNN) runs once per audit: Go chooses every row,
// seed and release (the same rows as the built-in models' trials) and
// scores the answer with the same metrics. The CNN gets the small-client
// releases only (one row, SmallRows rows, sums of k); the group sums,
// the DP releases and the job-sized federation are not run for it. There
// is no analytic inversion through a convolution, so its reconstruction
// is gradient matching alone, over raw pixels: a weaker attack than the
// MLP's, and a lower bound.
//
// # Attacks
//
// Reconstruction is analytic. For one example, the gradient of a
// first-layer unit's weights divided by that of its bias is the input
// (Phong et al., "Privacy-preserving deep learning via additively
// homomorphic encryption", IEEE TIFS 2018); it stays exact after any number
// of local steps with momentum, since every step adds a multiple of the
// same row. For a batch, each ReLU neuron (or, for logistic regression,
// each class) yields a blend of the rows that reached it, and a neuron that
// fired for one row only yields that row: the separation that Fowl et al.
// ("Robbing the Fed", ICLR 2022) force with a malicious model and that a
// fresh model gives by chance. Gradient matching (DLG: Zhu, Liu & Han,
// "Deep Leakage from Gradients", NeurIPS 2019, in the cosine form of
// Geiping et al., "Inverting Gradients — How easy is it to break privacy
// in federated learning?", NeurIPS 2020) then optimises one dummy row per
// true row, with the inferred labels, until their gradient at the global
// model points along the update (gradmatch.go). The release's
// reconstruction is the union of both attacks' candidates, paired one to
// one with the true rows (greedily by similarity, as the inversion papers
// pair reconstructions with originals); guessing gets as many candidates
// drawn from the attacker's own validation rows, paired the same way, so
// it is the attacker who knows the population but not the client.
//
// Labels follow from the last layer's bias: one row's gradient there is
// p − onehot(y), so the label is the one entry of the other sign (iDLG:
// Zhao, Mopuri & Bilen, "iDLG: Improved Deep Leakage from Gradients",
// 2020), and a batch's or a sum's label counts follow from Δb_L ≈
// −η·Ω·(p̄ − π), with Ω the momentum-weighted step count the attacker knows
// from the reported sample count (labelShares). From the influence
// scalars, label shares are fitted by non-negative least squares against
// the class-conditional validation gradients (scalarShares).
//
// Membership is the cosine between the release and a candidate row's
// descent direction at the global model (the gradient-alignment idea of
// Nasr, Shokri & Houmansadr, "Comprehensive Privacy Analysis of Deep
// Learning", IEEE S&P 2019), or, for the scalars, the correlation over
// rounds between a client's scalars and the row's own ⟨∇L_val, −∇ℓ⟩;
// non-members are test rows with the members' labels, so that label skew
// does not pass for membership. The AUC is the Mann–Whitney statistic.
//
// Not here: the last-layer feature inversion of the CNN (its linear
// layer's weight and bias gradients give a lone row's pooled features,
// which a second optimisation could invert); the Cocktail Party Attack (Kariyappa et al., ICML 2023), which
// separates a sum of first-layer gradients by independent component
// analysis and is reported to recover inputs from sums of large batches;
// gradient matching that unrolls the local steps (Geiping et al. §5)
// rather than matching one gradient at the global model; and malicious
// coordinators (crafted models, substituted validation gradients), which
// the threat model excludes. The numbers are therefore lower bounds on
// what a determined coordinator learns.
//
// # Differential privacy
//
// The DP releases (dp.go) are DP-FedAvg (McMahan et al., ICLR 2018):
// updates clipped to a norm, summed with equal weights, Gaussian noise of
// σ times the norm added to the sum, with σ the smallest for which package
// accountant gives the target ε at the target δ per client over the job's
// rounds. They are attacked like the others, and the job-sized federation
// is trained under them to show the accuracy they cost. The clipping norm
// is read from the updates (their median norm), which a deployment must
// not do: there it is a job parameter.
//
// What DP costs a real job — its test accuracy, and the Spearman ρ of its
// clients' values against plaintext exact Shapley — is measured by
// `tally audit dp` (make audit-dp) in cmd/tally rather than here, since
// it runs whole jobs through tally simulate with privacy.dp: a job with
// skewed sizes, a label flipper and a free rider, whose values differ
// clearly, without DP and at ε = 1, 4, 8 (audit/results/dp-fidelity.md).
//
// # Metrics
//
// Images (digits, 8×8, 0–16): PSNR with peak 16, and SSIM (Wang et al.,
// "Image quality assessment: from error visibility to structural
// similarity", IEEE TIP 2004) as the mean over 3×3 windows. Tables
// (breast-cancer): the RMS distance, in standard deviations, from each true
// row to the reconstruction paired with it (nearest pairs first, one to
// one) and the mean absolute per-feature error of that pair. Labels: the share of a release's label multiset
// recovered. Membership: AUC, 0.5 being random guessing.
//
// # Purity
//
// Run is deterministic in Config.Seed: every random choice comes from a
// PCG keyed by SHA-256 of (seed, purpose, indices). It reads no clock and
// writes no file; cmd/tally adds the machine and date.
package audit
