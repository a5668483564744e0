// Package pipeline holds the pre- and post-processing steps the node runs
// around its models, and the ensembles built from them: what turns a JPEG
// frame or PCM audio into a model's input tensor, and a model's output into
// the answer an application wants (classes, text boxes, text).
//
// Every step is a small value type behind one interface, Step: it is
// configured once (from a model's config.yaml), holds no state between
// calls, and maps one input to one output. Steps that produce tensors take
// their memory from the request's inference.Allocator, so with the pinned
// pool the intermediate tensors of an ensemble live in pinned host memory.
// Every error a step returns names the step and wraps
// inference.ErrInvalidArgument (HTTP 400) when the input is at fault.
//
// Steps:
//
//	Decode       JPEG/PNG bytes → image (header checked against a pixel budget first)
//	DetResize    image → frame scaled to a side limit, sides rounded to a multiple of 32 (PP-OCR det)
//	FitResize    image → frame of a fixed height, width by aspect, padded (PP-OCR cls/rec)
//	ToTensor     frame → FP32 NCHW tensor: colour order, scale, mean/std
//	PCM16        little-endian PCM16 bytes → FP32 frames [n, size]
//	Softmax      FP32 [.., C] → probabilities over the last axis
//	TopK         probabilities [C] → the k best classes with labels
//	DBPostprocess  PP-OCR DB probability map → text boxes with scores
//	Crop         image + box → the box's pixels, upright (rotated when tall)
//	ClsDecide    PP-OCR cls output → whether to turn a crop by 180°
//	CTCDecode    PP-OCR rec output → text and score (greedy CTC)
//
// The ensemble OCR (ocr.go) chains them with the three PP-OCR models into
// one inference.Model.
package pipeline

import (
	"context"
	"fmt"
	"image"

	"github.com/edgeai/edge-node/inference"
)

// Step is one pre- or post-processing step. Apply is pure: the same input
// gives the same output, and nothing is kept between calls. Tensors it
// returns are in memory from a (steps that make no tensor ignore it).
// Errors name the step; an input the step cannot take wraps
// inference.ErrInvalidArgument.
type Step[In, Out any] interface {
	// Name is the step's name in errors and metrics ("decode", "db").
	Name() string
	Apply(ctx context.Context, a inference.Allocator, in In) (Out, error)
}

// invalid returns an error naming step that wraps ErrInvalidArgument.
func invalid(step, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", step, fmt.Sprintf(format, args...), inference.ErrInvalidArgument)
}

// Every step is a Step.
var (
	_ Step[[]byte, image.Image]      = Decode{}
	_ Step[image.Image, *Frame]      = DetResize{}
	_ Step[image.Image, *Frame]      = FitResize{}
	_ Step[*Frame, inference.Tensor] = ToTensor{}
	_ Step[[]byte, inference.Tensor] = PCM16{}
	_ Step[inference.Tensor, Probs]  = Softmax{}
	_ Step[Probs, [][]Class]         = TopK{}
	_ Step[DetMap, []Box]            = DBPostprocess{}
	_ Step[Cropping, *image.RGBA]    = Crop{}
	_ Step[inference.Tensor, []bool] = ClsDecide{}
	_ Step[inference.Tensor, []Text] = CTCDecode{}
)
