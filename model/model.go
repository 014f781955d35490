package model

import (
	"errors"
	"math/rand/v2"
)

// Sentinel errors. Callers check them with errors.Is.
var (
	ErrParamLength = errors.New("model: parameter vector has the wrong length")
	ErrShape       = errors.New("model: examples do not match the model's input shape")
	ErrSpec        = errors.New("model: invalid model spec")
)

// Examples is a dense, row-major design matrix with integer class labels.
// X holds Len()*Features values; Y holds one label in [0, classes) per row.
// Examples values are treated as read-only by every function in this module.
type Examples struct {
	X        []float64
	Y        []int
	Features int
}

// Len is the number of rows.
func (e Examples) Len() int { return len(e.Y) }

// Row returns row i of X without copying.
func (e Examples) Row(i int) []float64 { return e.X[i*e.Features : (i+1)*e.Features] }

// Subset returns the rows at the given indices, copied.
func (e Examples) Subset(idx []int) Examples {
	out := Examples{X: make([]float64, 0, len(idx)*e.Features), Y: make([]int, 0, len(idx)), Features: e.Features}
	for _, i := range idx {
		out.X = append(out.X, e.Row(i)...)
		out.Y = append(out.Y, e.Y[i])
	}
	return out
}

// TrainConfig holds the local-training hyper-parameters of one call to Train.
type TrainConfig struct {
	Epochs       int     `yaml:"epochs" json:"epochs"`
	BatchSize    int     `yaml:"batch_size" json:"batch_size"`
	LearningRate float64 `yaml:"learning_rate" json:"learning_rate"`
	Momentum     float64 `yaml:"momentum" json:"momentum"`
	WeightDecay  float64 `yaml:"weight_decay" json:"weight_decay"`
}

// Metrics is the result of an evaluation: mean cross-entropy loss and accuracy.
type Metrics struct {
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
}

// TrainStats reports what one Train call did.
type TrainStats struct {
	Steps   int     // optimiser steps taken
	Samples int     // samples processed (epochs × rows)
	Loss    float64 // mean training loss over the last epoch
}

// Model is a classifier whose parameters are one flat []float64 vector.
//
// Contract: a Model is NOT safe for concurrent use; callers that evaluate in
// parallel take one Clone per goroutine. Every method that receives a slice
// treats it as read-only and never retains it; Params returns a fresh copy.
// Evaluate and Gradient never change the parameters. Results are
// deterministic: the same parameters, data and rng give the same bits.
type Model interface {
	// NumParams is the length of the parameter vector.
	NumParams() int
	// Params returns a copy of the current parameters.
	Params() []float64
	// SetParams copies p into the model. It fails with ErrParamLength.
	SetParams(p []float64) error
	// Train runs mini-batch SGD with momentum from the current parameters;
	// rng shuffles the rows each epoch.
	Train(data Examples, cfg TrainConfig, rng *rand.Rand) (TrainStats, error)
	// Evaluate returns the mean loss and accuracy on data at the current parameters.
	Evaluate(data Examples) (Metrics, error)
	// Gradient writes the gradient of the mean loss on data, at the current
	// parameters, into out (len NumParams()).
	Gradient(data Examples, out []float64) error
	// Clone returns an independent model with the same spec and parameters.
	Clone() Model
}
