// Package accountant tracks the differential-privacy budget of repeated
// Gaussian mechanisms in Rényi differential privacy, and converts it to an
// (ε, δ) guarantee a reader can compare with others.
//
// A mechanism is (α, ε)-RDP when the Rényi divergence of order α between
// its output distributions on neighbouring inputs is at most ε (Mironov,
// "Rényi Differential Privacy", CSF 2017). RDP composes by addition at
// each order, and (α, ε)-RDP implies (ε + log(1/δ)/(α−1), δ)-DP for every
// δ ∈ (0, 1) (Mironov 2017, Proposition 3); the accountant takes the best
// order.
//
// The Gaussian mechanism with L2 sensitivity Δ and noise N(0, σ²Δ²), σ the
// noise multiplier, is (α, α/(2σ²))-RDP for every α > 1 (Mironov 2017,
// Proposition 7). When each record takes part with probability q
// (Poisson subsampling, as in DP-SGD: Abadi et al., "Deep Learning with
// Differential Privacy", CCS 2016, whose moments accountant is this
// bound's ancestor), the sampled Gaussian mechanism at an integer order α
// is ε(α) = log(A_α)/(α−1) with
//
//	A_α = Σ_{k=0}^{α} C(α, k)·(1−q)^{α−k}·q^k·exp((k² − k)/(2σ²))
//
// (Mironov, Talwar & Zhang, "Rényi Differential Privacy of the Sampled
// Gaussian Mechanism", 2019, Section 3.3), computed here in log space.
// Fractional orders are accepted only without subsampling (q = 1), where
// the closed form holds for every α > 1.
//
// The package is pure: no clock, no I/O, no randomness. A job's
// privacy.dp option (package engine, dp.go) sizes its clients' noise
// with it and reports each client's ε from it.
package accountant
