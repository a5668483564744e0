package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the node's whole configuration: a plain struct, filled from
// defaults, then the YAML config file, then environment, then flags (the
// command does that layering; this package only validates).
type Config struct {
	// HTTPAddr is where the KServe v2 and admin REST APIs listen. Loopback
	// by default: exposing inference beyond the device is a deliberate act.
	HTTPAddr string `yaml:"http_addr"`
	// GRPCAddr is where Triton's gRPC inference service listens
	// (inference.GRPCInferenceService, node/kserve/tritongrpc); "" turns it
	// off. Loopback by default, like HTTPAddr.
	GRPCAddr string `yaml:"grpc_addr"`
	// HTTPSocket and GRPCSocket are Unix-domain socket paths on which the
	// REST and gRPC APIs are served too, for callers on the device ("":
	// none). SocketMode is their file mode, octal (default "0660": owner
	// and group). See unixsock.go.
	HTTPSocket string `yaml:"http_socket"`
	GRPCSocket string `yaml:"grpc_socket"`
	SocketMode string `yaml:"socket_mode"`
	// ModelRepository is a Triton-style folder <dir>/<name>/<version>/model.onnx
	// served (imported into the store) at boot. Optional.
	ModelRepository string `yaml:"model_repository"`
	// DataDir holds the model store (blobs and the bbolt catalog).
	DataDir string `yaml:"data_dir"`
	// ORTLibrary is the path of libonnxruntime.so.
	ORTLibrary string `yaml:"ort_library"`
	// MaxRequestBytes bounds an /infer body; larger bodies get 413.
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// DrainTimeout bounds how long shutdown waits for in-flight requests.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Pprof serves /debug/pprof/ on the HTTP address when true.
	Pprof bool `yaml:"pprof"`
	// AdminToken, when set, is required as a Bearer token on /admin/ calls
	// (and on Triton's repository load and unload). The systemd credential
	// admin_token sets it too.
	AdminToken string `yaml:"admin_token"`
	// RepositoryControl enables Triton's POST /v2/repository/models/{m}/load
	// and /unload on the HTTP address (off, as Triton's default model
	// control mode; an unload is an operator decision, see
	// docs/architecture.md).
	RepositoryControl bool `yaml:"repository_control"`
	// Log configures logging.
	Log LogConfig `yaml:"log"`
	// Pinned configures the pinned host buffers that carry tensor bytes.
	Pinned PinnedConfig `yaml:"pinned"`
	// SharedMemory configures Triton's system shared-memory extension.
	SharedMemory SharedMemoryConfig `yaml:"shared_memory"`
	// Store configures the model store.
	Store StoreConfig `yaml:"store"`
	// Rollout configures on-device rollouts.
	Rollout RolloutConfig `yaml:"rollout"`
	// Cloud configures the cloud link (see cloudconfig.go).
	Cloud CloudConfig `yaml:"cloud"`
	// KubeEdge configures the KubeEdge bridges (see kubeedgeconfig.go).
	KubeEdge KubeEdgeConfig `yaml:"kubeedge"`
	// Tracing configures the export of OpenTelemetry spans over OTLP/HTTP
	// (see tracing.go).
	Tracing TracingConfig `yaml:"tracing"`
}

// RolloutConfig configures on-device rollouts (canary, shadow, rollback).
type RolloutConfig struct {
	// MemoryBudgetBytes bounds the estimated memory of loaded sessions:
	// the Previous version stays loaded for an instant rollback only when
	// it fits (0: no budget, Previous always stays loaded).
	MemoryBudgetBytes int64 `yaml:"memory_budget_bytes"`
	// ShadowConcurrency bounds concurrent shadow runs (default 1).
	ShadowConcurrency int `yaml:"shadow_concurrency"`
	// EvalInterval is how often a rollout's gates are evaluated.
	EvalInterval time.Duration `yaml:"eval_interval"`
}

// PinnedConfig configures the pool of pinned host buffers (package
// cgo/pinned) that request and response tensors live in.
type PinnedConfig struct {
	// BudgetBytes bounds the C memory the pool holds; requests that find
	// it exhausted wait up to MaxWait, then get 503 with Retry-After.
	BudgetBytes int64 `yaml:"budget_bytes"`
	// MaxWait bounds that wait.
	MaxWait time.Duration `yaml:"max_wait"`
	// DisableCUDA skips cudaHostAlloc even when libcudart is present.
	DisableCUDA bool `yaml:"disable_cuda"`
	// CUDARuntime is the libcudart to dlopen ("" searches the loader path).
	CUDARuntime string `yaml:"cuda_runtime"`
}

// SharedMemoryConfig configures the system shared-memory regions that
// local processes register (files under /dev/shm, node/kserve/sysshm).
type SharedMemoryConfig struct {
	// Disabled turns the extension off (its routes and RPCs answer 404 /
	// Unimplemented, tensors naming a region 501).
	Disabled bool `yaml:"disabled"`
	// BudgetBytes bounds the bytes of all registered regions.
	BudgetBytes int64 `yaml:"budget_bytes"`
}

// StoreConfig configures the model store.
type StoreConfig struct {
	// KeepVersions is how many versions per model garbage collection keeps
	// besides the Active, Previous and Canary ones.
	KeepVersions int `yaml:"keep_versions"`
	// BootVerify is how much the boot check reads before serving: "size"
	// (each blob exists with its size), "active" (re-hash the blobs of
	// Active versions, sizes for the rest; the default: a flipped bit in
	// a served model is caught, and the Previous version serves instead)
	// or "full" (re-hash everything).
	BootVerify string `yaml:"boot_verify"`
	// TrustedKeys are the ed25519 public keys (key id → base64) that
	// cloud manifests must be signed with; several allow key rotation.
	TrustedKeys map[string]string `yaml:"trusted_keys"`
}

// LogConfig configures the zerolog logger.
type LogConfig struct {
	// Level is trace, debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json, console, or auto (console on a terminal).
	Format string `yaml:"format"`
	// AccessEvery writes an access log line (info: request id, method,
	// path, status, bytes, duration) for every Nth REST request: 0 none,
	// 1 all. Rejected requests are logged anyway ("request rejected",
	// rate-limited).
	AccessEvery uint32 `yaml:"access_every"`
}

// DefaultConfig returns a fresh Config with the defaults filled in.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:        "127.0.0.1:8080",
		GRPCAddr:        "127.0.0.1:8001",
		SocketMode:      "0660",
		DataDir:         "/var/lib/edge-node",
		MaxRequestBytes: 64 << 20,
		DrainTimeout:    15 * time.Second,
		Log:             LogConfig{Level: "info", Format: "auto"},
		Pinned:          PinnedConfig{BudgetBytes: 256 << 20, MaxWait: 250 * time.Millisecond},
		SharedMemory:    SharedMemoryConfig{BudgetBytes: 1 << 30},
		Store:           StoreConfig{KeepVersions: 2, BootVerify: "active"},
		Rollout:         RolloutConfig{ShadowConcurrency: 1, EvalInterval: time.Second},
		Cloud:           defaultCloudConfig(),
		KubeEdge:        defaultKubeEdgeConfig(),
		Tracing:         defaultTracingConfig(),
	}
}

// maxConfigBytes bounds the config file: it is small by nature, and a huge
// file is a mistake, not a configuration.
const maxConfigBytes = 1 << 20

// DecodeConfig reads one YAML document from r on top of base. Unknown fields
// are an error (a typo in a config file should not be silently ignored), and
// so is a second document. On error base is returned unchanged.
//
// It does not validate: a file is one layer, and the environment or flags
// may complete it (a file that enables DMI while the pod's environment names
// the device). Call Validate on the merged config.
func DecodeConfig(r io.Reader, base Config) (Config, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return base, fmt.Errorf("reading config: %w", err)
	}
	if len(data) > maxConfigBytes {
		return base, fmt.Errorf("config is larger than %d bytes", maxConfigBytes)
	}
	return decodeConfigYAML(data, base)
}

// decodeConfigYAML decodes exactly one YAML document onto base. A second
// document is an error: it would otherwise be silently ignored (a file
// concatenated by mistake, or a "---" left in).
func decodeConfigYAML(data []byte, base Config) (cfg Config, err error) {
	defer func() {
		// yaml.v3 has panicked on hostile input before; never crash on a config.
		if r := recover(); r != nil {
			cfg, err = base, fmt.Errorf("config: YAML decoder panic: %v", r)
		}
	}()
	cfg = base
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return base, fmt.Errorf("config: %w", nameFields(data, err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return base, errors.New("config: more than one YAML document")
	}
	return cfg, nil
}

// LoadConfigFile reads the YAML config file at path on top of base (see
// DecodeConfig: the result is not validated).
func LoadConfigFile(path string, base Config) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return base, err
	}
	defer f.Close()
	cfg, err := DecodeConfig(f, base)
	if err != nil {
		return base, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	_, port, err := net.SplitHostPort(c.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http_addr %q: %w", c.HTTPAddr, err)
	}
	// A port out of range or a typo would otherwise pass here and fail
	// only at listen time, after the models were loaded.
	if _, err := strconv.ParseUint(port, 10, 16); err != nil && port != "" {
		return fmt.Errorf("http_addr %q: port %q is not a number from 0 to 65535", c.HTTPAddr, port)
	}
	if c.GRPCAddr != "" {
		_, port, err := net.SplitHostPort(c.GRPCAddr)
		if err != nil {
			return fmt.Errorf("grpc_addr %q: %w", c.GRPCAddr, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil && port != "" {
			return fmt.Errorf("grpc_addr %q: port %q is not a number from 0 to 65535", c.GRPCAddr, port)
		}
	}
	if _, err := c.socketMode(); err != nil {
		return err
	}
	if c.HTTPSocket != "" && c.HTTPSocket == c.GRPCSocket {
		return fmt.Errorf("http_socket and grpc_socket are both %q: each needs its own path", c.HTTPSocket)
	}
	if c.SharedMemory.BudgetBytes <= 0 && !c.SharedMemory.Disabled {
		return fmt.Errorf("shared_memory.budget_bytes %d: want a positive size (or shared_memory.disabled)", c.SharedMemory.BudgetBytes)
	}
	if c.DataDir == "" {
		return errors.New("data_dir must be set")
	}
	if c.MaxRequestBytes <= 0 {
		return fmt.Errorf("max_request_bytes must be positive, got %d", c.MaxRequestBytes)
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("drain_timeout must not be negative, got %v", c.DrainTimeout)
	}
	if c.Pinned.BudgetBytes < 0 || c.Pinned.MaxWait < 0 {
		return fmt.Errorf("pinned: budget_bytes and max_wait must not be negative")
	}
	if c.Rollout.MemoryBudgetBytes < 0 || c.Rollout.ShadowConcurrency < 0 || c.Rollout.EvalInterval < 0 {
		return fmt.Errorf("rollout: memory_budget_bytes, shadow_concurrency and eval_interval must not be negative")
	}
	if c.Store.KeepVersions < 0 {
		return fmt.Errorf("store.keep_versions must not be negative, got %d", c.Store.KeepVersions)
	}
	switch c.Store.BootVerify {
	case "size", "active", "full":
	default:
		return fmt.Errorf("store.boot_verify %q: want size, active or full", c.Store.BootVerify)
	}
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: want trace, debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console", "auto":
	default:
		return fmt.Errorf("log.format %q: want json, console or auto", c.Log.Format)
	}
	if err := c.Cloud.validate(); err != nil {
		return err
	}
	if err := c.Tracing.validate(); err != nil {
		return err
	}
	return c.KubeEdge.validate()
}

// nameFields rewrites yaml.v3's type errors, which give only a line
// ("line 3: cannot unmarshal !!str `lots` into int64"), to also name the
// field on that line ("line 3: max_request_bytes: cannot unmarshal ...").
// Other errors come back unchanged.
func nameFields(data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return err
	}
	fields := map[int]string{} // line → dotted field path, the innermost on that line
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				path := k.Value
				if prefix != "" {
					path = prefix + "." + k.Value
				}
				fields[k.Line], fields[v.Line] = path, path
				walk(v, path)
			}
		}
	}
	walk(&root, "")
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		var line int
		if _, serr := fmt.Sscanf(m, "line %d:", &line); serr == nil && fields[line] != "" && !strings.Contains(m, " not found in type ") {
			msgs[i] = fmt.Sprintf("line %d: %s:%s", line, fields[line], strings.TrimPrefix(m, fmt.Sprintf("line %d:", line)))
		}
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}
