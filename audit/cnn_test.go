package audit

import (
	"os"
	"testing"

	"github.com/tallyfl/tally/extmodel"
)

// cnnAttacker finds Python with PyTorch for the CNN's attacks. Without it
// the test is skipped, except on CI (CI set), where .ci/run installs
// python3-torch and a missing one is a failure, as in cmd/tally's
// TestPyTorchExample.
func cnnAttacker(t *testing.T) CNNAttacker {
	t.Helper()
	py, err := extmodel.FindPython("torch", "numpy")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and %v", err)
		}
		t.Skip(err)
	}
	return PythonCNN{Python: py}
}

// TestCNNBaselineAttackBeatsGuessing is TestBaselineAttackBeatsGuessing for
// the bring-your-own-model CNN: one client's plaintext update of a small
// batch, from examples/pytorch/digits_cnn.py's own training, inverted by
// gradient matching through torch autograd, must rebuild a one-row
// client's digit clearly better than guessing it from the attacker's
// validation set and give its label away, and a batch's labels must beat
// the prior.
func TestCNNBaselineAttackBeatsGuessing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PyTorch")
	}
	att := cnnAttacker(t)
	cfg := Config{Datasets: []string{"digits"}, Models: []string{KindCNN}, CNN: att, Trials: 1, Ks: []int{2}, Clients: 2, GroupK: 2, MatchIters: 200}.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	e, err := newCNNEnv(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rows, pics, err := e.cnn(att)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || len(pics) != 2 {
		t.Fatalf("%d rows and %d pictures, want 3 (1 row, %d rows, sum of 2) and 2", len(rows), len(pics), cfg.SmallRows)
	}
	for _, r := range rows {
		t.Logf("%s: PSNR %.1f dB (guess %.1f), SSIM %.3f (guess %.3f), labels %.3f (guess %.3f), MIA AUC %.3f",
			r.Release, r.PSNR, r.PSNRGuess, r.SSIM, r.SSIMGuess, r.LabelAcc, r.LabelAccGuess, r.AUC)
	}
	// Gradient matching is the CNN's only reconstruction (no analytic
	// inversion through a convolution): it rebuilds one row's image, not
	// yet a batch's, whose labels the last layer's bias still gives away.
	one, batch := rows[0], rows[1]
	if one.LabelAcc != 1 {
		t.Errorf("%s: label recovered %.3f, want 1 (iDLG)", one.Release, one.LabelAcc)
	}
	if !(one.SSIM > one.SSIMGuess+0.15) {
		t.Errorf("%s: SSIM %.3f, want 0.15 above guessing's %.3f", one.Release, one.SSIM, one.SSIMGuess)
	}
	if !(one.PSNR > one.PSNRGuess+1) {
		t.Errorf("%s: PSNR %.1f dB, want 1 dB above guessing's %.1f dB", one.Release, one.PSNR, one.PSNRGuess)
	}
	if !(batch.LabelAcc > batch.LabelAccGuess+0.2) {
		t.Errorf("%s: label recovery %.3f, want 0.2 above guessing's %.3f", batch.Release, batch.LabelAcc, batch.LabelAccGuess)
	}
}
