package extmodel

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
)

// ProtocolVersion is the version of the framing and messages described in
// doc.go. A hello whose answer names another version is refused.
const ProtocolVersion = 1

// maxHeaderBytes bounds one header line, so that an adapter that prints
// something endless instead of a header is refused rather than read into
// memory. Headers hold a layout (a name and a shape per tensor) and a few
// scalars; 4 MiB is thousands of tensors.
const maxHeaderBytes = 4 << 20

// maxArrayValues bounds one announced array (2^28 values, 2 GiB of
// float64): far above any model tally can aggregate (the coordinator
// refuses updates above MaxUpdateValues), and low enough that a corrupt
// header does not make tally allocate the machine's memory.
const maxArrayValues = 1 << 28

// Array describes one binary array of a message's payload.
type Array struct {
	Name  string `json:"name"`
	DType string `json:"dtype"` // "f64", "f32" or "i32", little-endian
	Shape []int  `json:"shape"`
}

// Len is the number of values of the array (the product of its shape).
func (a Array) Len() int {
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

func (a Array) width() int {
	switch a.DType {
	case "f64":
		return 8
	case "f32", "i32":
		return 4
	}
	return 0
}

// Tensor is one named tensor of a model's parameter layout.
type Tensor struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// TrainConfig is the hyper-parameters part of a train request.
type TrainConfig struct {
	Epochs       int     `json:"epochs"`
	BatchSize    int     `json:"batch_size"`
	LearningRate float64 `json:"learning_rate"`
	Momentum     float64 `json:"momentum"`
	WeightDecay  float64 `json:"weight_decay"`
}

// header is every field of every message; each message uses some (doc.go
// lists which). One type keeps the reader and writer trivial.
type header struct {
	Op       string `json:"op,omitempty"`
	Protocol int    `json:"protocol,omitempty"`

	// hello
	Role     string `json:"role,omitempty"`
	Features int    `json:"features,omitempty"`
	Classes  int    `json:"classes,omitempty"`
	Seed     uint64 `json:"seed,omitempty"`

	// data, train, evaluate, forget
	Data string `json:"data,omitempty"`
	Rows int    `json:"rows,omitempty"`

	// train
	Task   string       `json:"task,omitempty"`
	Config *TrainConfig `json:"config,omitempty"`

	// evaluate
	Count     int  `json:"count,omitempty"`
	Gradients bool `json:"gradients,omitempty"`

	// answers
	OK        *bool     `json:"ok,omitempty"`
	Error     string    `json:"error,omitempty"`
	Name      string    `json:"name,omitempty"`
	Layout    []Tensor  `json:"layout,omitempty"`
	NumParams int       `json:"num_params,omitempty"`
	Samples   int       `json:"samples,omitempty"`
	Steps     int       `json:"steps,omitempty"`
	Metrics   *metrics  `json:"metrics,omitempty"`
	Loss      []float64 `json:"loss,omitempty"`
	Accuracy  []float64 `json:"accuracy,omitempty"`

	Payload []Array `json:"payload,omitempty"`
}

type metrics struct {
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
}

// message is a header and its arrays, decoded: float arrays as []float64,
// integer arrays as []int32, in the order of Payload.
type message struct {
	header
	floats map[string][]float64
	ints   map[string][]int32
}

// writeMessage writes h's line and then each array of its payload, raw.
// floats and ints are taken by name from the arrays h.Payload lists.
func writeMessage(w *bufio.Writer, h header, floats map[string][]float64, ints map[string][]int32) error {
	line, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(append(line, '\n')); err != nil {
		return err
	}
	var raw []byte
	for _, a := range h.Payload {
		switch a.DType {
		case "f64":
			v := floats[a.Name]
			if len(v) != a.Len() {
				return fmt.Errorf("extmodel: array %s has %d values, its shape %v says %d", a.Name, len(v), a.Shape, a.Len())
			}
			raw = slices.Grow(raw[:0], 8*len(v))[:8*len(v)]
			for i, x := range v {
				binary.LittleEndian.PutUint64(raw[8*i:], math.Float64bits(x))
			}
		case "i32":
			v := ints[a.Name]
			if len(v) != a.Len() {
				return fmt.Errorf("extmodel: array %s has %d values, its shape %v says %d", a.Name, len(v), a.Shape, a.Len())
			}
			raw = slices.Grow(raw[:0], 4*len(v))[:4*len(v)]
			for i, x := range v {
				binary.LittleEndian.PutUint32(raw[4*i:], uint32(x))
			}
		default:
			return fmt.Errorf("extmodel: array %s: tally writes only f64 and i32, not %q", a.Name, a.DType)
		}
		if _, err := w.Write(raw); err != nil {
			return err
		}
	}
	return w.Flush()
}

// readMessage reads one header line and the arrays it announces. Any
// deviation from the framing is an error wrapping ErrProtocol that says
// what was read.
func readMessage(r *bufio.Reader) (message, error) {
	var m message
	line, err := readLine(r)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(line, &m.header); err != nil {
		return m, fmt.Errorf("%w: the header line is not a JSON object (%v): %q", ErrProtocol, err, clip(line, 200))
	}
	if len(m.Payload) == 0 {
		return m, nil
	}
	m.floats, m.ints = map[string][]float64{}, map[string][]int32{}
	for _, a := range m.Payload {
		n := a.Len()
		if a.width() == 0 {
			return m, fmt.Errorf("%w: array %q has dtype %q, want f64, f32 or i32", ErrProtocol, a.Name, a.DType)
		}
		if len(a.Shape) == 0 || n < 0 || n > maxArrayValues {
			return m, fmt.Errorf("%w: array %q has shape %v", ErrProtocol, a.Name, a.Shape)
		}
		for _, d := range a.Shape {
			if d < 0 {
				return m, fmt.Errorf("%w: array %q has shape %v", ErrProtocol, a.Name, a.Shape)
			}
		}
		raw := make([]byte, n*a.width())
		if _, err := io.ReadFull(r, raw); err != nil {
			return m, fmt.Errorf("%w: array %q announced %d bytes: %v", ErrProtocol, a.Name, len(raw), err)
		}
		switch a.DType {
		case "f64":
			v := make([]float64, n)
			for i := range v {
				v[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
			}
			m.floats[a.Name] = v
		case "f32":
			v := make([]float64, n)
			for i := range v {
				v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
			}
			m.floats[a.Name] = v
		case "i32":
			v := make([]int32, n)
			for i := range v {
				v[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
			}
			m.ints[a.Name] = v
		}
	}
	return m, nil
}

// readLine reads up to '\n', refusing lines above maxHeaderBytes.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			return line[:len(line)-1], nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF && len(line) == 0 {
				return nil, io.EOF
			}
			if err == io.EOF {
				return nil, fmt.Errorf("%w: the output ended inside a header line: %q", ErrProtocol, clip(line, 200))
			}
			return nil, err
		}
		if len(line) > maxHeaderBytes {
			return nil, fmt.Errorf("%w: a header line longer than %d bytes: %q…", ErrProtocol, maxHeaderBytes, clip(line, 200))
		}
	}
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n])
	}
	return string(b)
}
