package serving

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edgeai/edge-node/inference"
	"github.com/edgeai/edge-node/inference/inferencetest"
)

func TestParseModelConfig(t *testing.T) {
	cfg, err := ParseModelConfig([]byte(`
platform: onnxruntime_onnx
labels: {team: speech}
providers: [{name: tensorrt, options: {fp16: true}}, {name: cuda}, {name: cpu}]
intra_op_threads: 1
graph_optimization: all
max_concurrency: 2
dynamic_batching: {max_batch_size: 8, max_queue_delay: 1ms, batch_dims: {h: 1}}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Session()
	if cfg.Platform != inference.PlatformONNX || cfg.Labels["team"] != "speech" || len(s.Providers) != 3 ||
		s.Providers[0].Name != inference.ProviderTensorRT || !s.Providers[0].Options.FP16 ||
		s.IntraOpThreads != 1 || s.GraphOptimization != "all" || s.MaxConcurrency != 2 ||
		s.DynamicBatching == nil || s.DynamicBatching.MaxBatchSize != 8 || s.DynamicBatching.BatchDims["h"] != 1 {
		t.Errorf("parsed %+v", cfg)
	}
	ens, err := ParseModelConfig([]byte("ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt, box_thresh: 0.7}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o := ens.Ensemble.OCR; o.BoxThresh != 0.7 || o.DetThresh != 0.3 || o.UnclipRatio != 1.5 || o.Rec.Version != "1" {
		t.Errorf("ensemble config %+v: want box_thresh 0.7 and PaddleOCR's defaults otherwise", o)
	}
	for _, empty := range []string{"", "# only a comment\n", "---\n"} {
		cfg, err := ParseModelConfig([]byte(empty))
		if err != nil || cfg.Platform != "" || len(cfg.Providers) != 0 {
			t.Errorf("%q: %+v, %v; want the default config", empty, cfg, err)
		}
	}
}

// TestParseModelConfigRejects: every bad config is an error wrapping
// inference.ErrInvalidArgument (the store and the admin API map it to 400)
// that names the problem.
func TestParseModelConfigRejects(t *testing.T) {
	manyLabels := "labels:\n"
	for i := range 65 {
		manyLabels += fmt.Sprintf("  k%d: v\n", i)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "intra_op_thread: 2\n", "field intra_op_thread not found"},
		{"unknown nested key", "providers: [{name: cuda, options: {gpu: 1}}]\n", "field gpu not found"},
		{"bad provider", "providers: [{name: openvino}]\n", `unknown provider "openvino"`},
		{"provider listed twice", "providers: [{name: cpu}, {name: cpu}]\n", "listed twice"},
		{"negative threads", "intra_op_threads: -1\n", "intra_op_threads is -1"},
		{"negative concurrency", "max_concurrency: -2\n", "max_concurrency is -2"},
		{"bad platform", "platform: tensorflow_savedmodel\n", `platform "tensorflow_savedmodel"`},
		{"platform wrong type", "platform: [onnx]\n", "cannot unmarshal"},
		{"labels wrong type", "labels: [a, b]\n", "cannot unmarshal"},
		{"too many labels", manyLabels, "65 labels"},
		{"bad graph optimization", "graph_optimization: turbo\n", "graph_optimization"},
		{"wrong type", "max_batch: lots\n", "cannot unmarshal"},
		{"batching without max_batch_size", "dynamic_batching: {timeout: 1s}\n", "max_batch_size is 0"},
		{"batching unknown key", "dynamic_batching: {max_batch_size: 2, queue: 3}\n", "field queue not found"},
		{"batching bad delay", "dynamic_batching: {max_batch_size: 2, max_queue_delay: 1 hour}\n", "cannot unmarshal"},
		{"ensemble with batching", "dynamic_batching: {max_batch_size: 2}\nensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt}}\n", "no session of its own"},
		{"not a mapping", "- 1\n- 2\n", "cannot unmarshal"},
		{"syntax error", "providers: [\n", "model config"},
		{"too big", "# " + strings.Repeat("x", inference.MaxConfigSize) + "\n", "more than"},
		{"alias bomb", inferencetest.AliasBomb(t), "model config"},
		{"two documents", "intra_op_threads: 1\n---\nintra_op_threads: 2\n", "more than one YAML document"},
		{"empty second document", "intra_op_threads: 1\n---\n---\n", "more than one YAML document"},
		{"pipeline with no step", "pipeline: {}\n", "no step"},
		{"pipeline labels outside", "pipeline: {topk: {k: 1, labels: ../l.txt}}\n", "topk labels"},
		{"pipeline and ensemble", "pipeline: {topk: {k: 1}}\nensemble: {}\n", "pipeline and ensemble both set"},
		{"pipeline unknown key", "pipeline: {topk: {k: 1, labelz: x}}\n", "field labelz not found"},
		{"ensemble of no kind", "ensemble: {}\n", "no kind set"},
		{"ensemble with a session", "intra_op_threads: 1\nensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt}}\n", "no session of its own"},
		{"ensemble member unpinned", "ensemble: {ocr: {det: {model: d}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: k}}\n", "member det: model and version must both be set"},
		{"ensemble member bad name", "ensemble: {ocr: {det: {model: ../d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: k}}\n", "member det"},
		{"ensemble no dictionary", "ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}}}\n", "dictionary"},
		{"ensemble dictionary outside", "ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: ../keys.txt}}\n", "dictionary"},
		{"ensemble box_thresh", "ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt, box_thresh: 1.5}}\n", "box_thresh is 1.5"},
		{"ensemble unclip_ratio", "ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt, unclip_ratio: -1}}\n", "unclip_ratio is -1"},
		{"ensemble max_pixels", "ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt, max_pixels: 1000000000}}\n", "max_pixels is 1000000000"},
		{"ensemble unknown key", "ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt, tresh: 0.2}}\n", "field tresh not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseModelConfig([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			if !errors.Is(err, inference.ErrInvalidArgument) {
				t.Errorf("error %v does not wrap inference.ErrInvalidArgument", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// FuzzParseModelConfig: the store validates every config.yaml (repository
// folder, admin import, cloud manifest) through ParseModelConfig, so any
// bytes must give a valid config or an ErrInvalidArgument error, never a
// panic.
func FuzzParseModelConfig(f *testing.F) {
	for _, seed := range []string{
		"",
		"platform: onnxruntime_onnx\nlabels: {a: b}\nproviders: [{name: tensorrt, options: {fp16: true}}, {name: cpu}]\n",
		"intra_op_threads: 2\ninter_op_threads: 1\ngraph_optimization: basic\nmax_batch: 8\ninstances: 2\nmem_arena: false\n",
		"providers: [{name: cuda, options: {device_id: 0, cudnn_conv_algo_search: heuristic, extra: {k: v}}}]\n",
		"a: &a [*a]\n",
		"x: 1\n---\ny: 2\n",
		"pipeline: {input: x, image: {height: 48, min_width: 192, max_width: 192, bgr: true, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}, topk: {k: 2, labels: l.txt}}\n",
		"pipeline: {pcm16: {frame: 512}}\n",
		"ensemble: {ocr: {det: {model: d, version: \"1\"}, cls: {model: c, version: \"1\"}, rec: {model: r, version: \"1\"}, dictionary: keys.txt, det_thresh: 0.2, max_boxes: 5}}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseModelConfig(data)
		if err != nil {
			if !errors.Is(err, inference.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		if cfg.Platform != "" && cfg.Platform != inference.PlatformONNX {
			t.Fatalf("accepted platform %q", cfg.Platform)
		}
		if err := cfg.Session().Validate(); err != nil {
			t.Fatalf("accepted a session config that does not validate: %v", err)
		}
	})
}
