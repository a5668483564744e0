package pipeline

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/edgeai/edge-node/inference"
)

// Config is a model config's `pipeline` section: steps put around one
// model, so that it takes what a device has (a JPEG or PNG frame, PCM
// audio) and answers what an application wants (the best classes).
//
//	pipeline:
//	  input: x                     # the model input fed by preprocessing (default: the first)
//	  image: {height: 48, min_width: 192, max_width: 192, bgr: true, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
//	  output: softmax_0.tmp_0      # the model output turned into classes (default: the first)
//	  topk: {k: 1, labels: labels.txt}
//
// Clients then send the input under its name as BYTES [1] (the encoded
// image, or the PCM16 bytes) and get the output as BYTES [rows, k], each
// element "score:index:label" (Triton's classification format).
type Config struct {
	Input  string       `yaml:"input"`
	Image  *ImageConfig `yaml:"image"`
	PCM16  *PCM16Config `yaml:"pcm16"`
	Output string       `yaml:"output"`
	TopK   *TopKConfig  `yaml:"topk"`
}

// ImageConfig preprocesses an encoded image: Decode (MaxPixels), then
// either DetResize (LimitSide, Multiple) or FitResize (Height, MinWidth,
// MaxWidth), then ToTensor (BGR, Scale — default 1/255 —, Mean, Std).
type ImageConfig struct {
	MaxPixels int        `yaml:"max_pixels"`
	LimitSide int        `yaml:"limit_side"`
	Multiple  int        `yaml:"multiple"`
	Height    int        `yaml:"height"`
	MinWidth  int        `yaml:"min_width"`
	MaxWidth  int        `yaml:"max_width"`
	BGR       bool       `yaml:"bgr"`
	Scale     float32    `yaml:"scale"`
	Mean      [3]float32 `yaml:"mean"`
	Std       [3]float32 `yaml:"std"`
}

// PCM16Config preprocesses 16-bit PCM into frames of Frame samples.
type PCM16Config struct {
	Frame int `yaml:"frame"`
}

// TopKConfig postprocesses class scores: Softmax first when set, then
// the K best, labelled from Labels (a file of the version folder, one
// label a line).
type TopKConfig struct {
	K       int    `yaml:"k"`
	Labels  string `yaml:"labels"`
	Softmax bool   `yaml:"softmax"`
}

// Validate checks the section; errors wrap inference.ErrInvalidArgument.
func (c *Config) Validate() error {
	const step = "pipeline"
	switch {
	case c.Image != nil && c.PCM16 != nil:
		return invalid(step, "image and pcm16 both set: one input is preprocessed")
	case c.Image == nil && c.PCM16 == nil && c.TopK == nil:
		return invalid(step, "no step: set image, pcm16 or topk")
	}
	if im := c.Image; im != nil {
		fixed, fit := im.LimitSide != 0 || im.Multiple != 0, im.Height != 0
		switch {
		case fixed == fit:
			return invalid(step, "image: set either limit_side (and multiple) or height (and min_width, max_width)")
		case im.MaxPixels < 0 || im.MaxPixels > 1<<26:
			return invalid(step, "image: max_pixels is %d, want 0 … %d", im.MaxPixels, 1<<26)
		case fixed && (im.LimitSide < 32 || im.LimitSide > 4096 || im.Multiple < 0 || im.Multiple > 256):
			return invalid(step, "image: limit_side %d, multiple %d: want 32 … 4096 and 0 … 256", im.LimitSide, im.Multiple)
		case fit && (im.Height > 1024 || im.MinWidth < 0 || im.MaxWidth < max(im.MinWidth, 1) || im.MaxWidth > 8192):
			return invalid(step, "image: height %d, width %d … %d: want height ≤ 1024 and 1 ≤ min ≤ max ≤ 8192", im.Height, im.MinWidth, im.MaxWidth)
		}
		for i, s := range im.Std {
			if !(s != 0) {
				return invalid(step, "image: std[%d] is %v", i, s)
			}
		}
	}
	if p := c.PCM16; p != nil && (p.Frame < 1 || p.Frame > 1<<20) {
		return invalid(step, "pcm16: frame is %d, want 1 … %d", p.Frame, 1<<20)
	}
	if k := c.TopK; k != nil && (k.K < 1 || k.K > 1000) {
		return invalid(step, "topk: k is %d, want 1 … 1000", k.K)
	}
	return nil
}

// Wrapped is a model with its pipeline: an inference.Model whose
// preprocessed input takes BYTES and whose classified output gives
// "score:index:label" strings.
type Wrapped struct {
	m               inference.Model
	input, output   string // "" when not preprocessed / classified
	pre             func(context.Context, inference.Allocator, []byte) (inference.Tensor, error)
	softmax         bool
	topk            TopK
	inputs, outputs []inference.TensorInfo
}

// Wrap puts cfg's steps around m; labels are the topk labels file's
// entries (nil without topk).
func Wrap(m inference.Model, cfg Config, labels []string) (*Wrapped, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Wrapped{m: m}
	pick := func(kind, name string, infos []inference.TensorInfo) (string, error) {
		for _, ti := range infos {
			if (name == "" || ti.Name == name) && ti.DataType == inference.FP32 {
				return ti.Name, nil
			}
			if name == "" {
				break
			}
		}
		return "", invalid("pipeline", "%s %q: not an FP32 %s of %s/%s", kind, name, kind, m.Name(), m.Version())
	}
	w.inputs = append([]inference.TensorInfo(nil), m.Inputs()...)
	w.outputs = append([]inference.TensorInfo(nil), m.Outputs()...)
	if cfg.Image != nil || cfg.PCM16 != nil {
		name, err := pick("input", cfg.Input, w.inputs)
		if err != nil {
			return nil, err
		}
		w.input = name
		w.pre = preprocessor(cfg, name)
		for i := range w.inputs {
			if w.inputs[i].Name == name {
				w.inputs[i] = inference.TensorInfo{Name: name, DataType: inference.Bytes, Shape: []int64{1}}
			}
		}
	}
	if cfg.TopK != nil {
		name, err := pick("output", cfg.Output, w.outputs)
		if err != nil {
			return nil, err
		}
		w.output, w.softmax = name, cfg.TopK.Softmax
		w.topk = TopK{K: cfg.TopK.K, Labels: labels}
		for i := range w.outputs {
			if w.outputs[i].Name == name {
				if sh := w.outputs[i].Shape; labels != nil && len(sh) > 0 && sh[len(sh)-1] > 0 && int64(len(labels)) != sh[len(sh)-1] {
					return nil, invalid("pipeline", "topk: %d labels for the %d classes of output %q", len(labels), sh[len(sh)-1], name)
				}
				w.outputs[i] = inference.TensorInfo{Name: name, DataType: inference.Bytes, Shape: []int64{-1, int64(cfg.TopK.K)}}
			}
		}
	}
	return w, nil
}

func preprocessor(cfg Config, input string) func(context.Context, inference.Allocator, []byte) (inference.Tensor, error) {
	if p := cfg.PCM16; p != nil {
		return PCM16{FrameSize: p.Frame, Input: input}.Apply
	}
	im := *cfg.Image
	if im.Scale == 0 {
		im.Scale = 1.0 / 255
	}
	dec := Decode{MaxPixels: im.MaxPixels}
	tt := ToTensor{Input: input, Mean: im.Mean, Std: im.Std, Scale: im.Scale, BGR: im.BGR}
	resize := DetResize{LimitSide: im.LimitSide, Multiple: im.Multiple}.Apply
	if im.Height != 0 {
		resize = FitResize{Height: im.Height, MinWidth: im.MinWidth, MaxWidth: im.MaxWidth}.Apply
	}
	return func(ctx context.Context, a inference.Allocator, b []byte) (inference.Tensor, error) {
		img, err := dec.Apply(ctx, a, b)
		if err != nil {
			return inference.Tensor{}, err
		}
		f, err := resize(ctx, a, img)
		if err != nil {
			return inference.Tensor{}, err
		}
		return tt.Apply(ctx, a, f)
	}
}

// Name implements inference.Model.
func (w *Wrapped) Name() string { return w.m.Name() }

// Version implements inference.Model.
func (w *Wrapped) Version() string { return w.m.Version() }

// Platform implements inference.Model.
func (w *Wrapped) Platform() string { return w.m.Platform() }

// Provider implements inference.Model.
func (w *Wrapped) Provider() string { return w.m.Provider() }

// Inputs implements inference.Model: the preprocessed input is BYTES [1].
func (w *Wrapped) Inputs() []inference.TensorInfo { return w.inputs }

// Outputs implements inference.Model: the classified output is BYTES
// [rows, k].
func (w *Wrapped) Outputs() []inference.TensorInfo { return w.outputs }

// Close closes the wrapped model.
func (w *Wrapped) Close() error {
	if c, ok := w.m.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// Run implements inference.Model.
func (w *Wrapped) Run(ctx context.Context, inputs []inference.Tensor, outputs []string, a inference.Allocator) ([]inference.Tensor, error) {
	if w.input != "" {
		ins := make([]inference.Tensor, len(inputs))
		copy(ins, inputs)
		for i, in := range ins {
			if in.Name != w.input {
				continue
			}
			if in.DataType != inference.Bytes || len(in.Strings) != 1 {
				return nil, fmt.Errorf("model %s: input %q: want BYTES [1] (preprocessed by the model's pipeline): %w", w.m.Name(), w.input, inference.ErrInvalidArgument)
			}
			t, err := w.pre(ctx, a, in.Strings[0])
			if err != nil {
				return nil, fmt.Errorf("model %s input %q: %w", w.m.Name(), w.input, err)
			}
			ins[i] = t
		}
		inputs = ins
	}
	outs, err := w.m.Run(ctx, inputs, outputs, a)
	if err != nil || w.output == "" {
		return outs, err
	}
	for i, o := range outs {
		if o.Name == w.output {
			if outs[i], err = w.classify(ctx, a, o); err != nil {
				return nil, fmt.Errorf("model %s output %q: %w", w.m.Name(), w.output, err)
			}
		}
	}
	return outs, nil
}

// classify turns class scores into "score:index:label" strings, k a row.
func (w *Wrapped) classify(ctx context.Context, a inference.Allocator, t inference.Tensor) (inference.Tensor, error) {
	var p Probs
	var err error
	if w.softmax {
		p, err = Softmax{}.Apply(ctx, a, t)
	} else {
		p, err = scores(t)
	}
	if err != nil {
		return inference.Tensor{}, err
	}
	rows, err := w.topk.Apply(ctx, a, p)
	if err != nil {
		return inference.Tensor{}, err
	}
	k := min(w.topk.K, p.Classes)
	out := inference.Tensor{Name: t.Name, DataType: inference.Bytes, Shape: []int64{int64(p.Rows), int64(k)}}
	for _, row := range rows {
		for _, c := range row {
			s := strconv.AppendFloat(nil, float64(c.Score), 'g', 6, 32)
			s = append(strconv.AppendInt(append(s, ':'), int64(c.Index), 10), ':')
			out.Strings = append(out.Strings, append(s, c.Label...))
		}
	}
	return out, nil
}

// scores reads a tensor [.., C] as Probs without normalising.
func scores(t inference.Tensor) (Probs, error) {
	if len(t.Shape) == 0 {
		return Probs{}, invalid("topk", "tensor %q is a scalar", t.Name)
	}
	v, err := float32s("topk", t, len(t.Shape))
	if err != nil {
		return Probs{}, err
	}
	c := int(t.Shape[len(t.Shape)-1])
	if c == 0 {
		return Probs{}, invalid("topk", "tensor %q has no classes", t.Name)
	}
	return Probs{Rows: len(v) / c, Classes: c, P: v}, nil
}
