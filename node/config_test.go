package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeai/edge-node/inference/inferencetest"
)

func TestDecodeConfigAppliesFileOnDefaults(t *testing.T) {
	in := `
http_addr: 0.0.0.0:9000
data_dir: /srv/edge
drain_timeout: 3s
admin_token: s3cret
log: {level: debug}
pinned: {budget_bytes: 1048576}
store:
  keep_versions: 0
`
	cfg, err := DecodeConfig(strings.NewReader(in), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.HTTPAddr, want.DataDir, want.DrainTimeout, want.AdminToken = "0.0.0.0:9000", "/srv/edge", 3*time.Second, "s3cret"
	want.Log.Level = "debug"
	want.Pinned.BudgetBytes = 1 << 20
	want.Store.KeepVersions = 0
	if cfg.HTTPAddr != want.HTTPAddr || cfg.DataDir != want.DataDir || cfg.DrainTimeout != want.DrainTimeout ||
		cfg.AdminToken != want.AdminToken || cfg.Log != want.Log || cfg.Pinned != want.Pinned ||
		cfg.Store.KeepVersions != 0 || cfg.MaxRequestBytes != want.MaxRequestBytes {
		t.Errorf("decoded %+v\nwant    %+v", cfg, want)
	}
	// An empty file is the base unchanged.
	cfg, err = DecodeConfig(strings.NewReader(""), DefaultConfig())
	if err != nil || cfg.HTTPAddr != DefaultConfig().HTTPAddr {
		t.Errorf("empty file: %+v, %v", cfg, err)
	}
}

// TestDecodeConfigRejectsBadInput: every bad file is an error, from
// decoding or from validating the decoded config, that names the problem
// (the field, where there is one).
func TestDecodeConfigRejectsBadInput(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"unknown field", "http_adr: 127.0.0.1:1\n", "field http_adr not found"},
		{"unknown nested field", "log: {levle: debug}\n", "field levle not found"},
		{"wrong type for int", "max_request_bytes: lots\n", "max_request_bytes"},
		{"wrong type for bool", "pprof: [1]\n", "pprof"},
		{"wrong type for struct", "log: debug\n", "LogConfig"},
		{"duration as number", "drain_timeout: 5\n", "drain_timeout"},
		{"bad duration", "drain_timeout: 5 parsecs\n", "drain_timeout"},
		{"http_addr without port", "http_addr: localhost\n", "http_addr"},
		{"http_addr port out of range", "http_addr: 127.0.0.1:70000\n", "http_addr"},
		{"http_addr port not a number", "http_addr: 127.0.0.1:eighty\n", "http_addr"},
		{"grpc_addr without port", "grpc_addr: localhost\n", "grpc_addr"},
		{"grpc_addr port out of range", "grpc_addr: 127.0.0.1:70000\n", "grpc_addr"},
		{"repository_control not a bool", "repository_control: maybe\n", "repository_control"},
		{"socket_mode not octal", "socket_mode: \"0999\"\n", "socket_mode"},
		{"socket_mode too wide", "socket_mode: \"7777\"\n", "socket_mode"},
		{"one path for both sockets", "http_socket: /run/x.sock\ngrpc_socket: /run/x.sock\n", "each needs its own path"},
		{"shared memory budget zero", "shared_memory: {budget_bytes: 0}\n", "shared_memory.budget_bytes"},
		{"cloud unknown field", "cloud: {brokr: tcp://h:1}\n", "field brokr not found"},
		{"cloud broker bad scheme", "cloud: {broker: http://h:1}\n", "cloud.broker"},
		{"cloud broker no port", "cloud: {broker: tcp://h}\n", "cloud.broker"},
		{"cloud broker path", "cloud: {broker: tcp://h:1/x}\n", "cloud.broker"},
		{"cloud broker not a url", "cloud: {broker: \"tcp://h:1\\x00\"}\n", "cloud.broker"},
		{"cloud embedded addr", "cloud: {embedded_addr: nowhere}\n", "cloud.embedded_addr"},
		{"cloud node id slash", "cloud: {node_id: a/b}\n", "cloud.node_id"},
		{"cloud node id wildcard", "cloud: {node_id: \"#\"}\n", "cloud.node_id"},
		{"cloud group bad", "cloud: {groups: [\"+\"]}\n", "cloud.groups"},
		{"cloud group twice", "cloud: {groups: [a, a]}\n", "cloud.groups"},
		{"cloud groups not a list", "cloud: {groups: a}\n", "cloud.groups"},
		{"cloud topic root wildcard", "cloud: {topic_root: \"a/#\"}\n", "cloud.topic_root"},
		{"cloud cert without key", "cloud: {tls: {cert_file: c.pem}}\n", "cloud.tls"},
		{"cloud label key", "cloud: {labels: {\"a/b\": x}}\n", "cloud.labels"},
		{"cloud window zero", "cloud: {window: 0}\n", "cloud.window"},
		{"cloud download rate negative", "cloud: {download_rate: -1}\n", "cloud.download_rate"},
		{"cloud download rate not a number", "cloud: {download_rate: 512KiB}\n", "download_rate"},
		{"cloud fetch window no end", "cloud: {fetch_window: \"01:00\"}\n", "cloud.fetch_window"},
		{"cloud fetch window hour 24", "cloud: {fetch_window: \"24:00-05:00\"}\n", "cloud.fetch_window"},
		{"cloud fetch window empty span", "cloud: {fetch_window: \"05:00-05:00\"}\n", "cloud.fetch_window"},
		{"cloud fetch window not a string", "cloud: {fetch_window: [a]}\n", "fetch_window"},
		{"kubeedge unknown field", "kubeedge: {dmi: {enabeld: true}}\n", "field enabeld not found"},
		{"kubeedge dmi without device", "kubeedge: {dmi: {enabled: true}}\n", "kubeedge.dmi"},
		{"kubeedge dmi same sockets", "kubeedge: {dmi: {enabled: true, device_name: n1, socket: /a.sock, edgecore_socket: /a.sock}}\n", "kubeedge.dmi"},
		{"kubeedge dmi report interval zero", "kubeedge: {dmi: {enabled: true, device_name: n1, report_interval: 0s}}\n", "report_interval"},
		{"kubeedge dmi version not settable", "kubeedge: {dmi: {version: x}}\n", "field version not found"},
		{"kubeedge eventbus no broker", "kubeedge: {eventbus: {enabled: true, device_name: n1, broker: \"\"}}\n", "kubeedge.eventbus"},
		{"kubeedge eventbus device name with wildcard", "kubeedge: {eventbus: {enabled: true, device_name: \"n/#\"}}\n", "kubeedge.eventbus"},
		{"kubeedge eventbus enabled not a bool", "kubeedge: {eventbus: {enabled: maybe}}\n", "kubeedge.eventbus.enabled"},
		{"cloud max model bytes", "cloud: {max_model_bytes: -1}\n", "cloud.max_model_bytes"},
		{"cloud stall timeout", "cloud: {stall_timeout: 0s}\n", "cloud.stall_timeout"},
		{"cloud max message bytes under a chunk", "cloud: {max_message_bytes: 1048576}\n", "cloud.max_message_bytes"},
		{"cloud max message bytes over MQTT's", "cloud: {max_message_bytes: 268435456}\n", "cloud.max_message_bytes"},
		{"tracing unknown field", "tracing: {endpiont: http://c:4318}\n", "field endpiont not found"},
		{"tracing endpoint bad scheme", "tracing: {endpoint: \"grpc://c:4317\"}\n", "tracing.endpoint"},
		{"tracing endpoint no scheme", "tracing: {endpoint: \"c:4318\"}\n", "tracing.endpoint"},
		{"tracing endpoint no host", "tracing: {endpoint: \"http://\"}\n", "tracing.endpoint"},
		{"tracing endpoint not a url", "tracing: {endpoint: \"http://c:4318\\x00\"}\n", "tracing.endpoint"},
		{"tracing endpoint with credentials", "tracing: {endpoint: \"https://u:p@c:4318\"}\n", "tracing.headers"},
		{"tracing endpoint with query", "tracing: {endpoint: \"http://c:4318/v1/traces?x=1\"}\n", "tracing.endpoint"},
		{"tracing endpoint not a string", "tracing: {endpoint: [a]}\n", "tracing.endpoint"},
		{"tracing sample ratio over 1", "tracing: {sample_ratio: 1.5}\n", "tracing.sample_ratio"},
		{"tracing sample ratio negative", "tracing: {sample_ratio: -0.1}\n", "tracing.sample_ratio"},
		{"tracing sample ratio NaN", "tracing: {sample_ratio: .nan}\n", "tracing.sample_ratio"},
		{"tracing sample ratio not a number", "tracing: {sample_ratio: half}\n", "tracing.sample_ratio"},
		{"tracing timeout zero", "tracing: {timeout: 0s}\n", "tracing.timeout"},
		{"tracing timeout negative", "tracing: {timeout: -1s}\n", "tracing.timeout"},
		{"tracing timeout as number", "tracing: {timeout: 10}\n", "tracing.timeout"},
		{"tracing ca file with http", "tracing: {endpoint: \"http://c:4318\", ca_file: /etc/ca.pem}\n", "ca_file is for an https"},
		{"tracing header name with space", "tracing: {headers: {\"x y\": v}}\n", "tracing.headers"},
		{"tracing header set by the exporter", "tracing: {headers: {content-type: text/plain}}\n", "tracing.headers"},
		{"tracing header value with newline", "tracing: {headers: {x-token: \"a\\nb\"}}\n", "tracing.headers.x-token"},
		{"tracing headers not a map", "tracing: {headers: [a]}\n", "tracing.headers"},
		{"empty data_dir", "data_dir: ''\n", "data_dir"},
		{"zero max_request_bytes", "max_request_bytes: 0\n", "max_request_bytes"},
		{"negative max_request_bytes", "max_request_bytes: -1\n", "max_request_bytes"},
		{"negative drain_timeout", "drain_timeout: -1s\n", "drain_timeout"},
		{"negative pinned budget", "pinned: {budget_bytes: -5}\n", "budget_bytes"},
		{"negative pinned wait", "pinned: {max_wait: -1ms}\n", "max_wait"},
		{"negative keep_versions", "store: {keep_versions: -1}\n", "keep_versions"},
		{"bad boot_verify", "store: {boot_verify: some}\n", "store.boot_verify"},
		{"bad log level", "log: {level: loud}\n", "log.level"},
		{"bad log format", "log: {format: xml}\n", "log.format"},
		{"two documents", "http_addr: 127.0.0.1:1\n---\nhttp_addr: 127.0.0.1:2\n", "more than one YAML document"},
		{"not a mapping", "- a\n- b\n", "cannot unmarshal"},
		{"syntax error", "http_addr: [\n", "config"},
		{"tab indentation", "log:\n\tlevel: debug\n", "config"},
		{"oversize file", "# " + strings.Repeat("x", maxConfigBytes) + "\n", "larger than"},
		{"alias bomb", inferencetest.AliasBomb(t), "config"},
		{"int overflow", "max_request_bytes: 99999999999999999999999\n", "max_request_bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := DefaultConfig()
			got, err := DecodeConfig(strings.NewReader(tc.in), base)
			if err == nil {
				err = got.Validate()
			}
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigFileNamesFileAndField(t *testing.T) {
	p := filepath.Join(t.TempDir(), "edge-node.yaml")
	if err := os.WriteFile(p, []byte("log: {level: [loud]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfigFile(p, DefaultConfig())
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "log.level") {
		t.Errorf("error %v: want the path and log.level", err)
	}
	if _, err := LoadConfigFile(filepath.Join(t.TempDir(), "absent.yaml"), DefaultConfig()); err == nil {
		t.Error("a missing file was accepted")
	}
}

// FuzzDecodeConfig: any input decodes or is an error; never a panic (in
// decoding or in validating what was decoded), and the base is returned on
// error.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte("http_addr: 127.0.0.1:0\ndata_dir: /tmp/x\nlog: {level: warn, format: json}\n"))
	f.Add([]byte("pinned: {budget_bytes: 1, max_wait: 1ms, disable_cuda: true}\nstore: {keep_versions: 3, trusted_keys: {k1: AAAA}}\n"))
	f.Add([]byte("drain_timeout: 1h\n---\n"))
	f.Add([]byte("cloud: {broker: ssl://b:8883, node_id: n1, groups: [a, b], labels: {site: x}, tls: {ca_file: ca.pem, cert_file: c, key_file: k}, trusted_key_files: [k.pub]}\n"))
	f.Add([]byte("cloud: {disabled: true, embedded_addr: 127.0.0.1:0, topic_root: x/y, window: 4}\n"))
	f.Add([]byte("kubeedge: {dmi: {enabled: true, device_name: n1, device_namespace: edge, socket: /run/m.sock, edgecore_socket: /run/d.sock, report_interval: 1s}}\n"))
	f.Add([]byte("kubeedge: {eventbus: {enabled: true, broker: tcp://127.0.0.1:1884, device_name: n1, client_id: c, username: u, password: p}}\n"))
	f.Add([]byte("kubeedge: {dmi: {enabled: true}, eventbus: {enabled: true, device_name: \"+\"}}\n"))
	f.Add([]byte("tracing: {endpoint: \"https://otel.example:4318/v1/traces\", sample_ratio: 0.25, headers: {authorization: Bearer x}, timeout: 5s, ca_file: /etc/ca.pem}\n"))
	f.Add([]byte("tracing: {endpoint: \"http://[::1]:4318\", sample_ratio: 1e-9, headers: {\"\": \"\\u0000\"}}\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte(inferencetest.AliasBomb(f)))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := DefaultConfig()
		cfg, err := DecodeConfig(bytes.NewReader(data), base)
		if err != nil {
			if cfg.HTTPAddr != base.HTTPAddr || cfg.DataDir != base.DataDir || cfg.Log != base.Log {
				t.Fatalf("error %v but the config changed: %+v", err, cfg)
			}
			return
		}
		_ = cfg.Validate() // a file alone may be incomplete; it must not panic
	})
}

func TestDecodeConfigCloudSection(t *testing.T) {
	in := `
cloud:
  broker: ssl://broker.example:8883
  node_id: cam-7
  groups: [cams, eu]
  topic_root: acme/edge/v1
  tls: {ca_file: /etc/edge/ca.pem, cert_file: /etc/edge/n.pem, key_file: /etc/edge/n.key}
  username: cam-7
  labels: {site: lyon}
  trusted_key_files: [/etc/edge/release.pub]
  allow_unsigned_desired: false
  max_message_bytes: 2097152
`
	if !DefaultConfig().Cloud.AllowUnsignedDesired || DefaultConfig().Cloud.MaxMessageBytes != 4<<20 {
		t.Errorf("defaults: allow_unsigned_desired %v, max_message_bytes %d; want true, 4 MiB",
			DefaultConfig().Cloud.AllowUnsignedDesired, DefaultConfig().Cloud.MaxMessageBytes)
	}
	cfg, err := DecodeConfig(strings.NewReader(in), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cloud
	if c.Broker != "ssl://broker.example:8883" || c.NodeID != "cam-7" || len(c.Groups) != 2 || c.Groups[0] != "cams" ||
		c.TopicRoot != "acme/edge/v1" || c.TLS.KeyFile != "/etc/edge/n.key" || c.Labels["site"] != "lyon" ||
		len(c.TrustedKeyFiles) != 1 || c.EmbeddedAddr != DefaultEmbeddedAddr || c.Window != 16 ||
		c.AllowUnsignedDesired || c.MaxMessageBytes != 2<<20 {
		t.Errorf("cloud = %+v", c)
	}
	if id, err := (CloudConfig{}).nodeID(); err != nil || id == "" {
		t.Logf("host name as node id: %q, %v (host-dependent)", id, err)
	}
}

func TestDecodeConfigTracingSection(t *testing.T) {
	def := DefaultConfig().Tracing
	if def.Endpoint != "" || def.SampleRatio != 1 || def.Timeout != 10*time.Second {
		t.Errorf("defaults %+v: want no endpoint (off), sample_ratio 1, timeout 10s", def)
	}
	in := `
tracing:
  endpoint: https://otel.example:4318
  sample_ratio: 0.25
  headers: {authorization: Bearer abc}
  timeout: 3s
  ca_file: /etc/edge/otel-ca.pem
`
	cfg, err := DecodeConfig(strings.NewReader(in), DefaultConfig())
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Tracing
	if c.Endpoint != "https://otel.example:4318" || c.SampleRatio != 0.25 || c.Headers["authorization"] != "Bearer abc" ||
		c.Timeout != 3*time.Second || c.CAFile != "/etc/edge/otel-ca.pem" {
		t.Errorf("tracing = %+v", c)
	}
}
