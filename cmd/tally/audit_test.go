package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestAuditWithoutTorchSaysSo: asked for the CNN without a Python that has
// PyTorch, tally audit fails naming what is missing and how to leave the
// CNN out, rather than writing a table without its rows.
func TestAuditWithoutTorchSaysSo(t *testing.T) {
	t.Setenv("TALLY_PYTHON", "/nonexistent/python3")
	err := runAudit(context.Background(), []string{"--datasets", "digits", "--models", "cnn", "--out", t.TempDir()}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "PyTorch") || !strings.Contains(err.Error(), "--models logreg,mlp") ||
		!strings.Contains(err.Error(), "/nonexistent/python3") {
		t.Fatalf("tally audit --models cnn without PyTorch = %v; want an error naming PyTorch, the interpreter tried and --models logreg,mlp", err)
	}
}
