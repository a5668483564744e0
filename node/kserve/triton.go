package kserve

import (
	"context"
	"net/http"
	"slices"

	"github.com/edgeai/edge-node/inference"
)

// Triton's extensions beyond the KServe v2 core: the model configuration
// (GET .../config) and the statistics extension (GET .../stats).

// StatsReader is implemented by a Backend that keeps per-version request
// statistics (inference.Router and the serving owner do); with it the
// handler serves Triton's statistics extension. The counters are recorded
// by the handler through the acquired model itself (RequestObserver), so
// the request path does no lookup.
type StatsReader interface {
	// Stats returns the counters of a routed version; an unknown one is an
	// error wrapping inference.ErrNotFound.
	Stats(model, version string) (inference.StatsSnapshot, error)
}

// RequestObserver is implemented by the models a Router hands out: a
// frontend records each request's times in the version's statistics.
type RequestObserver interface {
	ObserveRequest(inference.RequestTimes)
}

// configured is implemented by models that know their SessionConfig
// (*inference.Session and the Router's versions).
type configured interface {
	Config() inference.SessionConfig
}

// TritonDataType is Triton's model-configuration name of a datatype
// (TYPE_FP32, ...; BYTES is TYPE_STRING).
func TritonDataType(dt inference.DataType) string {
	if dt == inference.Bytes {
		return "TYPE_STRING"
	}
	return "TYPE_" + dt.String()
}

// ConfigInput is one input of a ModelConfig.
type ConfigInput struct {
	Name             string  `json:"name"`
	DataType         string  `json:"data_type"`
	Format           string  `json:"format"`
	Dims             []int64 `json:"dims"`
	IsShapeTensor    bool    `json:"is_shape_tensor"`
	AllowRaggedBatch bool    `json:"allow_ragged_batch"`
	Optional         bool    `json:"optional"`
}

// ConfigOutput is one output of a ModelConfig.
type ConfigOutput struct {
	Name          string  `json:"name"`
	DataType      string  `json:"data_type"`
	Dims          []int64 `json:"dims"`
	LabelFilename string  `json:"label_filename"`
	IsShapeTensor bool    `json:"is_shape_tensor"`
}

// InstanceGroup is a ModelConfig's instance group (KIND_CPU or KIND_GPU).
type InstanceGroup struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Count int    `json:"count"`
	GPUs  []int  `json:"gpus"`
}

// ModelConfig is Triton's model configuration (model_config.proto's
// ModelConfig, the fields the node fills) as its JSON form; the gRPC
// frontend converts it to the protobuf message.
type ModelConfig struct {
	Name                 string          `json:"name"`
	Platform             string          `json:"platform"`
	Backend              string          `json:"backend"`
	VersionPolicy        map[string]any  `json:"version_policy"`
	MaxBatchSize         int             `json:"max_batch_size"`
	Input                []ConfigInput   `json:"input"`
	Output               []ConfigOutput  `json:"output"`
	InstanceGroup        []InstanceGroup `json:"instance_group"`
	DefaultModelFilename string          `json:"default_model_filename"`
	Parameters           map[string]any  `json:"parameters"`
	// DynamicBatching is set when the version's config.yaml enables
	// dynamic batching.
	DynamicBatching *DynamicBatching `json:"dynamic_batching,omitempty"`
}

// DynamicBatching is model_config.proto's ModelDynamicBatching, the fields
// the node fills.
type DynamicBatching struct {
	PreferredBatchSize        []int       `json:"preferred_batch_size"`
	MaxQueueDelayMicroseconds int64       `json:"max_queue_delay_microseconds"`
	DefaultQueuePolicy        QueuePolicy `json:"default_queue_policy"`
}

// QueuePolicy is model_config.proto's ModelQueuePolicy: a request still
// queued after the timeout is rejected (0: no timeout); a full queue turns
// requests away (503 with Retry-After).
type QueuePolicy struct {
	TimeoutAction              string `json:"timeout_action"`
	DefaultTimeoutMicroseconds int64  `json:"default_timeout_microseconds"`
	AllowTimeoutOverride       bool   `json:"allow_timeout_override"`
	MaxQueueSize               int    `json:"max_queue_size"`
}

// configDims are a tensor's dims as Triton's configuration gives them:
// without the batch dimension batchDim (-1: none).
func configDims(shape []int64, batchDim int) []int64 {
	if batchDim >= 0 && batchDim < len(shape) {
		shape = append(slices.Clone(shape[:batchDim]), shape[batchDim+1:]...)
	}
	if shape == nil {
		return []int64{}
	}
	return shape
}

// batchDimOf is the batch dimension of a tensor of a model with cfg: per
// dynamic_batching's batch_dims, else the first when the model batches.
func batchDimOf(cfg inference.SessionConfig, name string, rank int) int {
	switch {
	case cfg.DynamicBatching != nil:
		return cfg.DynamicBatching.BatchDim(name, rank)
	case cfg.MaxBatch > 0 && rank > 0:
		return 0
	}
	return -1
}

// ModelConfigOf describes m as Triton's model configuration.
func ModelConfigOf(m inference.Model) ModelConfig {
	var cfg inference.SessionConfig
	if c, ok := m.(configured); ok {
		cfg = c.Config()
	}
	mc := ModelConfig{
		Name: m.Name(), Platform: m.Platform(), Backend: "onnxruntime",
		VersionPolicy:        map[string]any{"latest": map[string]int{"num_versions": 1}},
		MaxBatchSize:         max(cfg.BatchSize(), 0),
		DefaultModelFilename: "model.onnx",
		Parameters:           map[string]any{},
	}
	for _, in := range m.Inputs() {
		mc.Input = append(mc.Input, ConfigInput{Name: in.Name, DataType: TritonDataType(in.DataType), Format: "FORMAT_NONE",
			Dims: configDims(in.Shape, batchDimOf(cfg, in.Name, len(in.Shape)))})
	}
	for _, out := range m.Outputs() {
		mc.Output = append(mc.Output, ConfigOutput{Name: out.Name, DataType: TritonDataType(out.DataType), Dims: configDims(out.Shape, batchDimOf(cfg, out.Name, len(out.Shape)))})
	}
	ig := InstanceGroup{Name: m.Name(), Kind: "KIND_CPU", Count: max(cfg.Instances, 1), GPUs: []int{}}
	if p := m.Provider(); p != "" && p != "cpu" {
		ig.Kind = "KIND_GPU"
		for _, pc := range cfg.Providers {
			if pc.Name == p {
				ig.GPUs = []int{pc.Options.DeviceID}
			}
		}
	}
	mc.InstanceGroup = []InstanceGroup{ig}
	if d := cfg.DynamicBatching; d != nil {
		mc.DynamicBatching = &DynamicBatching{
			PreferredBatchSize:        []int{d.Preferred()},
			MaxQueueDelayMicroseconds: d.MaxQueueDelay.Microseconds(),
			DefaultQueuePolicy: QueuePolicy{TimeoutAction: "REJECT", DefaultTimeoutMicroseconds: d.Timeout.Microseconds(),
				MaxQueueSize: d.QueueSize()},
		}
	}
	if mc.Input == nil {
		mc.Input = []ConfigInput{}
	}
	if mc.Output == nil {
		mc.Output = []ConfigOutput{}
	}
	return mc
}

func (h *Handler) serveModelConfig(w http.ResponseWriter, r *http.Request) {
	m, release, err := h.backend.Acquire(r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	defer release()
	writeJSON(w, http.StatusOK, ModelConfigOf(m))
}

// Statistics extension JSON (Triton's ModelStatisticsResponse).

// StatDuration is Triton's StatisticDuration.
type StatDuration struct {
	Count uint64 `json:"count"`
	NS    uint64 `json:"ns"`
}

func statOf(d inference.Duration) StatDuration {
	return StatDuration{Count: d.Count, NS: uint64(max(d.Total, 0))}
}

// InferenceStats is Triton's InferStatistics.
type InferenceStats struct {
	Success       StatDuration `json:"success"`
	Fail          StatDuration `json:"fail"`
	Queue         StatDuration `json:"queue"`
	ComputeInput  StatDuration `json:"compute_input"`
	ComputeInfer  StatDuration `json:"compute_infer"`
	ComputeOutput StatDuration `json:"compute_output"`
	CacheHit      StatDuration `json:"cache_hit"`
	CacheMiss     StatDuration `json:"cache_miss"`
}

// ModelStats is Triton's ModelStatistics of one version.
type ModelStats struct {
	Name           string         `json:"name"`
	Version        string         `json:"version"`
	LastInference  int64          `json:"last_inference"` // ms since the epoch, 0 for none
	InferenceCount uint64         `json:"inference_count"`
	ExecutionCount uint64         `json:"execution_count"`
	InferenceStats InferenceStats `json:"inference_stats"`
	ResponseStats  map[string]any `json:"response_stats"`
	BatchStats     []any          `json:"batch_stats"`
	MemoryUsage    []any          `json:"memory_usage"`
}

func modelStatsOf(model, version string, s inference.StatsSnapshot) ModelStats {
	f := s.Frontend
	ms := ModelStats{
		Name: model, Version: version, InferenceCount: f.InferenceCount, ExecutionCount: f.ExecutionCount,
		InferenceStats: InferenceStats{
			Success: statOf(f.Success), Fail: statOf(f.Fail), Queue: statOf(f.Queue),
			ComputeInput: statOf(f.ComputeInput), ComputeInfer: statOf(f.ComputeInfer), ComputeOutput: statOf(f.ComputeOutput),
		},
		ResponseStats: map[string]any{}, BatchStats: []any{}, MemoryUsage: []any{},
	}
	if !f.LastInference.IsZero() {
		ms.LastInference = f.LastInference.UnixMilli()
	}
	return ms
}

// servingVersions lists the READY versions of model ("" for every model)
// by b's index, or, without one, model's default version.
func servingVersions(ctx context.Context, b Backend, model string) ([][2]string, error) {
	if ix, ok := b.(ModelIndexer); ok {
		var out [][2]string
		for _, e := range ix.Index(ctx) {
			if e.State == "READY" && (model == "" || e.Name == model) {
				out = append(out, [2]string{e.Name, e.Version})
			}
		}
		if len(out) > 0 || model == "" {
			return out, nil
		}
	}
	if model == "" {
		return nil, nil
	}
	m, release, err := b.Acquire(model, "")
	if err != nil {
		return nil, err
	}
	defer release()
	return [][2]string{{m.Name(), m.Version()}}, nil
}

// CollectStats gathers Triton's statistics: of one version, of every
// serving version of model (version ""), or of every serving version of
// every model (both ""). b must be a StatsReader. An unknown model or
// version is an error wrapping inference.ErrNotFound in Triton's wording.
func CollectStats(ctx context.Context, b Backend, model, version string) ([]ModelStats, error) {
	sr := b.(StatsReader)
	var versions [][2]string
	if version != "" {
		versions = [][2]string{{model, version}}
	} else {
		var err error
		if versions, err = servingVersions(ctx, b, model); err != nil {
			return nil, err
		}
	}
	out := []ModelStats{}
	for _, mv := range versions {
		s, err := sr.Stats(mv[0], mv[1])
		if err != nil {
			if model == "" {
				continue // unloaded since the index was read
			}
			// Acquire words an unknown model or version as Triton does.
			if _, release, aerr := b.Acquire(mv[0], mv[1]); aerr != nil {
				err = aerr
			} else {
				release()
			}
			return nil, err
		}
		out = append(out, modelStatsOf(mv[0], mv[1], s))
	}
	return out, nil
}

// serveModelStats answers GET /v2/models/stats, /v2/models/{m}/stats and
// /v2/models/{m}/versions/{v}/stats with Triton's model_stats.
func (h *Handler) serveModelStats(w http.ResponseWriter, r *http.Request) {
	stats, err := CollectStats(r.Context(), h.backend, r.PathValue("model"), r.PathValue("version"))
	if err != nil {
		h.writeError(w, r, toAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, struct {
		ModelStats []ModelStats `json:"model_stats"`
	}{stats})
}
