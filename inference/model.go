package inference

import (
	"context"
)

// Model is one loaded, servable model version. *Session implements it; the
// HTTP layer and the Router depend on this interface only.
type Model interface {
	// Name and Version identify the model version.
	Name() string
	Version() string
	// Platform is the protocol's platform string ("onnxruntime_onnx").
	Platform() string
	// Provider is the execution provider the session really runs on
	// ("cpu", "cuda", "tensorrt").
	Provider() string
	// Inputs and Outputs describe the model's tensors; -1 marks a variable
	// dimension. Callers must not modify the returned slices.
	Inputs() []TensorInfo
	Outputs() []TensorInfo
	// Run validates inputs against Inputs(), runs the model and returns the
	// requested outputs (all of them, in model order, when outputs is
	// empty). Output bytes are placed in memory from alloc, so they are
	// valid as long as alloc's allocations are. Errors wrap this package's
	// sentinels.
	Run(ctx context.Context, inputs []Tensor, outputs []string, alloc Allocator) ([]Tensor, error)
}
