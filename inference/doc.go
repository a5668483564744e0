// Package inference runs ONNX models with ONNX Runtime through
// github.com/yalue/onnxruntime_go. It is the only package (with its
// subpackages) that imports onnxruntime_go.
//
// An Environment is the process-wide ONNX Runtime environment; a Session is one
// loaded model version; a Router maps (model, version) to the Session that
// serves it. Tensors cross this package's boundary as Tensor values whose bytes
// live wherever the caller's Allocator put them: for the zero-copy path, in
// pinned host memory allocated in C, which ONNX Runtime reads and writes in
// place.
package inference
