package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"math"
	"time"

	"github.com/edgeai/edge-node/errdefs"
	"github.com/edgeai/edge-node/inference"
)

// Member names one model version an ensemble runs. The version is pinned:
// an ensemble version always runs the same member versions.
type Member struct {
	Model   string `yaml:"model"`
	Version string `yaml:"version"`
}

func (m Member) String() string { return m.Model + "/" + m.Version }

// OCRConfig is the `ensemble: {ocr: ...}` section of a model's
// config.yaml: PP-OCR's three models and the parameters of its steps.
// Zero values take PaddleOCR's defaults (see Defaults).
type OCRConfig struct {
	Det Member `yaml:"det"`
	Cls Member `yaml:"cls"`
	Rec Member `yaml:"rec"`
	// Dictionary is the recogniser's character list, a file of the
	// ensemble's version folder (ppocr_keys_v1.txt); a space class follows
	// it.
	Dictionary string `yaml:"dictionary"`

	MaxPixels    int     `yaml:"max_pixels"`     // Decode's budget (16 Mpx)
	DetLimitSide int     `yaml:"det_limit_side"` // longest side fed to det (960)
	DetThresh    float64 `yaml:"det_thresh"`     // binarisation (0.3)
	BoxThresh    float64 `yaml:"box_thresh"`     // min mean probability of a box (0.6)
	UnclipRatio  float64 `yaml:"unclip_ratio"`   // box growth (1.5)
	ClsThresh    float64 `yaml:"cls_thresh"`     // turn by 180° above (0.9)
	DropScore    float64 `yaml:"drop_score"`     // lines below are dropped (0.5)
	RecMaxWidth  int     `yaml:"rec_max_width"`  // widest line fed to rec (1920)
	MaxBoxes     int     `yaml:"max_boxes"`      // text boxes per image (100)
}

// Defaults returns c with every zero field set to PaddleOCR's default.
func (c OCRConfig) Defaults() OCRConfig {
	set := func(p *float64, v float64) {
		if *p == 0 {
			*p = v
		}
	}
	seti := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	seti(&c.MaxPixels, DefaultMaxPixels)
	seti(&c.DetLimitSide, 960)
	set(&c.DetThresh, 0.3)
	set(&c.BoxThresh, 0.6)
	set(&c.UnclipRatio, 1.5)
	set(&c.ClsThresh, 0.9)
	set(&c.DropScore, 0.5)
	seti(&c.RecMaxWidth, 1920)
	seti(&c.MaxBoxes, 100)
	return c
}

// Validate checks a config (after Defaults); errors wrap
// inference.ErrInvalidArgument and name the field.
func (c OCRConfig) Validate() error {
	const step = "ensemble ocr"
	for _, m := range []struct {
		name string
		m    Member
	}{{"det", c.Det}, {"cls", c.Cls}, {"rec", c.Rec}} {
		if m.m.Model == "" || m.m.Version == "" {
			return invalid(step, "member %s: model and version must both be set (an ensemble pins its members' versions)", m.name)
		}
	}
	if c.Dictionary == "" {
		return invalid(step, "dictionary: the recogniser's character file must be named")
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"det_thresh", c.DetThresh}, {"box_thresh", c.BoxThresh}, {"cls_thresh", c.ClsThresh}, {"drop_score", c.DropScore}} {
		if !(f.v > 0 && f.v < 1) {
			return invalid(step, "%s is %v, want 0 < v < 1", f.name, f.v)
		}
	}
	switch {
	case !(c.UnclipRatio > 0 && c.UnclipRatio <= 10):
		return invalid(step, "unclip_ratio is %v, want 0 < v ≤ 10", c.UnclipRatio)
	case c.MaxPixels < 1 || c.MaxPixels > 1<<26:
		return invalid(step, "max_pixels is %d, want 1 … %d", c.MaxPixels, 1<<26)
	case c.DetLimitSide < 32 || c.DetLimitSide > 4096:
		return invalid(step, "det_limit_side is %d, want 32 … 4096", c.DetLimitSide)
	case c.RecMaxWidth < recMinWidth || c.RecMaxWidth > 8192:
		return invalid(step, "rec_max_width is %d, want %d … 8192", c.RecMaxWidth, recMinWidth)
	case c.MaxBoxes < 1 || c.MaxBoxes > 1000:
		return invalid(step, "max_boxes is %d, want 1 … 1000", c.MaxBoxes)
	}
	return nil
}

// PP-OCR's input geometry.
const (
	recHeight   = 48
	recMinWidth = 320
	clsWidth    = 192
)

// Line is one recognised text line: its box in the original image, its
// text and the recogniser's score.
type Line struct {
	Box   [4]Point
	Text  string
	Score float32
	// Turned is true when the direction classifier turned the crop by 180°.
	Turned bool
}

// Stage names, the `step` label of the per-step time metric.
const (
	StageDecode  = "decode"
	StageDetPre  = "det_pre"
	StageDet     = "det"
	StageDetPost = "det_post"
	StageCrop    = "crop"
	StageClsPre  = "cls_pre"
	StageCls     = "cls"
	StageRecPre  = "rec_pre"
	StageRec     = "rec"
	StageRecPost = "rec_post"
)

// Stages lists the stage names in pipeline order.
var Stages = []string{StageDecode, StageDetPre, StageDet, StageDetPost, StageCrop, StageClsPre, StageCls, StageRecPre, StageRec, StageRecPost}

// Timings is the time each stage took in one run (stages over several
// boxes add up).
type Timings map[string]time.Duration

// Runner runs one member model on one input and returns its first output.
// Inside the node it is the serving owner's sessions; a client pipeline
// can run the same steps against three REST calls.
type Runner interface {
	RunMember(ctx context.Context, m Member, in inference.Tensor, a inference.Allocator) (inference.Tensor, error)
}

// OCRPipeline is PP-OCR as steps: decode → det resize → tensor → det → DB
// post-process → for each box: crop → cls resize → tensor → cls → turn →
// rec resize → tensor → rec → CTC.
type OCRPipeline struct {
	cfg    OCRConfig
	decode Decode
	detRes DetResize
	detIn  ToTensor
	db     DBPostprocess
	crop   Crop
	clsRes FitResize
	recRes FitResize
	lineIn ToTensor
	cls    ClsDecide
	ctc    CTCDecode
}

// NewOCRPipeline builds the pipeline from a config (Defaults applied) and
// the character dictionary's entries.
func NewOCRPipeline(cfg OCRConfig, dict []string) (*OCRPipeline, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(dict) == 0 {
		return nil, invalid("ensemble ocr", "empty dictionary")
	}
	db := PPOCRDet()
	db.Thresh, db.BoxThresh, db.UnclipRatio, db.MaxCandidates = cfg.DetThresh, cfg.BoxThresh, cfg.UnclipRatio, 10*cfg.MaxBoxes
	return &OCRPipeline{
		cfg:    cfg,
		decode: Decode{MaxPixels: cfg.MaxPixels},
		detRes: DetResize{LimitSide: cfg.DetLimitSide, Multiple: 32},
		detIn:  ToTensor{Input: "x", Mean: [3]float32{0.485, 0.456, 0.406}, Std: [3]float32{0.229, 0.224, 0.225}, Scale: 1.0 / 255, BGR: true},
		db:     db,
		clsRes: FitResize{Height: recHeight, MinWidth: clsWidth, MaxWidth: clsWidth},
		recRes: FitResize{Height: recHeight, MinWidth: recMinWidth, MaxWidth: cfg.RecMaxWidth},
		lineIn: ToTensor{Input: "x", Mean: [3]float32{0.5, 0.5, 0.5}, Std: [3]float32{0.5, 0.5, 0.5}, Scale: 1.0 / 255, BGR: true},
		cls:    ClsDecide{Threshold: float32(cfg.ClsThresh)},
		ctc:    CTCDecode{Dict: dict, Space: true},
	}, nil
}

// Config returns the pipeline's config, defaults applied.
func (p *OCRPipeline) Config() OCRConfig { return p.cfg }

// Recognise runs the pipeline on one encoded image. The detector's input
// and output tensors come from a (pinned memory, with the node's request
// allocator); per-box tensors from the Go heap (see below). t, if not nil,
// receives each stage's time.
func (p *OCRPipeline) Recognise(ctx context.Context, r Runner, a inference.Allocator, img []byte, t Timings) ([]Line, error) {
	mark := time.Now()
	lap := func(stage string) {
		now := time.Now()
		if t != nil {
			t[stage] += now.Sub(mark)
		}
		mark = now
	}
	src, err := p.decode.Apply(ctx, a, img)
	if err != nil {
		return nil, err
	}
	lap(StageDecode)
	frame, err := p.detRes.Apply(ctx, a, src)
	if err != nil {
		return nil, err
	}
	in, err := p.detIn.Apply(ctx, a, frame)
	if err != nil {
		return nil, err
	}
	lap(StageDetPre)
	out, err := r.RunMember(ctx, p.cfg.Det, in, a)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.cfg.Det, err)
	}
	lap(StageDet)
	boxes, err := p.db.Apply(ctx, a, DetMap{Map: out, Frame: frame})
	if err != nil {
		return nil, fmt.Errorf("%s output: %w", p.cfg.Det, err)
	}
	if len(boxes) > p.cfg.MaxBoxes {
		boxes = boxes[:p.cfg.MaxBoxes]
	}
	lap(StageDetPost)
	// Per-box tensors (crop, cls and rec inputs, rec's [1, T, 6625]
	// output: up to several MB a line) live on the Go heap, freed box by
	// box; a request allocator (a pinned lease) frees only when the request
	// ends, so with max_boxes lines it would hold them all. The det tensors,
	// the largest single ones, stay in a.
	boxAlloc := inference.Allocator(inference.HeapAllocator{})
	var lines []Line
	for _, b := range boxes {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("ensemble ocr: %w: %w", err, errdefs.ErrUnavailable)
		}
		line, keep, err := p.recogniseBox(ctx, r, boxAlloc, src, b, lap)
		if err != nil {
			return nil, err
		}
		if keep {
			lines = append(lines, line)
		}
	}
	return lines, nil
}

func (p *OCRPipeline) recogniseBox(ctx context.Context, r Runner, a inference.Allocator, src image.Image, b Box, lap func(string)) (Line, bool, error) {
	crop, err := p.crop.Apply(ctx, a, Cropping{Image: src, Box: b})
	if err != nil {
		return Line{}, false, err
	}
	lap(StageCrop)
	f, err := p.clsRes.Apply(ctx, a, crop)
	if err != nil {
		return Line{}, false, err
	}
	in, err := p.lineIn.Apply(ctx, a, f)
	if err != nil {
		return Line{}, false, err
	}
	lap(StageClsPre)
	out, err := r.RunMember(ctx, p.cfg.Cls, in, a)
	if err != nil {
		return Line{}, false, fmt.Errorf("%s: %w", p.cfg.Cls, err)
	}
	turn, err := p.cls.Apply(ctx, a, out)
	if err != nil || len(turn) != 1 {
		return Line{}, false, fmt.Errorf("%s output: %w", p.cfg.Cls, err)
	}
	lap(StageCls)
	if turn[0] {
		crop = Rotate180(crop)
	}
	if f, err = p.recRes.Apply(ctx, a, crop); err != nil {
		return Line{}, false, err
	}
	if in, err = p.lineIn.Apply(ctx, a, f); err != nil {
		return Line{}, false, err
	}
	lap(StageRecPre)
	if out, err = r.RunMember(ctx, p.cfg.Rec, in, a); err != nil {
		return Line{}, false, fmt.Errorf("%s: %w", p.cfg.Rec, err)
	}
	lap(StageRec)
	texts, err := p.ctc.Apply(ctx, a, out)
	if err != nil || len(texts) != 1 {
		return Line{}, false, fmt.Errorf("%s output: %w", p.cfg.Rec, err)
	}
	lap(StageRecPost)
	line := Line{Box: b.Points, Text: texts[0].Text, Score: texts[0].Score, Turned: turn[0]}
	return line, float64(line.Score) >= p.cfg.DropScore, nil
}

// Output tensor names of the ocr ensemble.
const (
	OutputText  = "text"  // BYTES [n]: one UTF-8 string a line
	OutputScore = "score" // FP32 [n]: the recogniser's score
	OutputBox   = "box"   // FP32 [n, 4, 2]: corners (x, y) clockwise from top left
	InputImage  = "image" // BYTES [1]: a JPEG or PNG file
)

// LinesTensors encodes lines as the ensemble's outputs, in names order
// (all three, in the order above, when names is empty). Numbers are in
// memory from a.
func LinesTensors(ctx context.Context, a inference.Allocator, lines []Line, names []string) ([]inference.Tensor, error) {
	if len(names) == 0 {
		names = []string{OutputText, OutputScore, OutputBox}
	}
	n := int64(len(lines))
	out := make([]inference.Tensor, len(names))
	for i, name := range names {
		switch name {
		case OutputText:
			s := make([][]byte, len(lines))
			for j, l := range lines {
				s[j] = []byte(l.Text)
			}
			out[i] = inference.Tensor{Name: name, DataType: inference.Bytes, Shape: []int64{n}, Strings: s}
		case OutputScore, OutputBox:
			per := 1
			shape := []int64{n}
			if name == OutputBox {
				per, shape = 8, []int64{n, 4, 2}
			}
			buf, err := a.Alloc(ctx, len(lines)*per*4)
			if err != nil {
				return nil, err
			}
			for j, l := range lines {
				vals := []float64{float64(l.Score)}
				if name == OutputBox {
					vals = vals[:0]
					for _, q := range l.Box {
						vals = append(vals, q.X, q.Y)
					}
				}
				for k, v := range vals {
					binary.LittleEndian.PutUint32(buf[(j*per+k)*4:], math.Float32bits(float32(v)))
				}
			}
			out[i] = inference.Tensor{Name: name, DataType: inference.FP32, Shape: shape, Data: buf}
		default:
			return nil, fmt.Errorf("ensemble ocr: no output %q (it has %s, %s, %s): %w", name, OutputText, OutputScore, OutputBox, inference.ErrInvalidArgument)
		}
	}
	return out, nil
}
