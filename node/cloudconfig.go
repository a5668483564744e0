package node

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/edgeai/edge-node/models"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/transfer"
	"github.com/edgeai/edge-node/sync/wire"
)

// CloudConfig configures the cloud link (docs/protocol.md): which broker,
// who this node is, which groups it belongs to, TLS and credentials, and the
// keys that manifests must be signed with.
type CloudConfig struct {
	// Disabled turns the cloud link off entirely: no broker, no link (the
	// node serves what its store and model repository hold).
	Disabled bool `yaml:"disabled"`
	// Broker is the broker URL: tcp://host:port, ssl://host:port (also
	// tls://, mqtt://, mqtts://). Empty starts the embedded broker on
	// EmbeddedAddr and connects to it, so a single device works alone.
	Broker string `yaml:"broker"`
	// EmbeddedAddr is where the embedded broker listens (default
	// 127.0.0.1:1883). If the port is taken, the node logs it and goes on
	// without a broker (serving is never blocked by the link).
	EmbeddedAddr string `yaml:"embedded_addr"`
	// NodeID names the node in topics and is the stable MQTT client id's
	// suffix; empty means the host name.
	NodeID string `yaml:"node_id"`
	// Groups this node belongs to, highest priority first.
	Groups []string `yaml:"groups"`
	// TopicRoot is the root of every topic (default edgeai/v1).
	TopicRoot string `yaml:"topic_root"`
	// TLS files: CA alone verifies the broker; cert and key add a client
	// certificate (mutual TLS).
	TLS CloudTLS `yaml:"tls"`
	// Username and Password authenticate to the broker. The password may
	// also come from the systemd credential broker_password or the
	// environment (EDGE_NODE_BROKER_PASSWORD).
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Labels describe the node for fleet selection (reported, not
	// interpreted by the node).
	Labels map[string]string `yaml:"labels"`
	// TrustedKeyFiles are PEM public keys (what `edgectl keygen` writes)
	// that manifests must be signed with. They are added to the store's
	// trusted keys: one key set verifies every manifest.
	TrustedKeyFiles []string `yaml:"trusted_key_files"`
	// RootKeyFiles are PEM public keys that sign the fleet's key list
	// (edgectl keys publish): the list adds signing keys, trusted until it
	// expires, and revokes keys, those of trusted_key_files and
	// store.trusted_keys included. Empty: the node takes no key list. Root
	// keys sign only key lists, never manifests or desired state.
	RootKeyFiles []string `yaml:"root_key_files"`
	// AllowUnsignedDesired accepts desired state that is not signed (the
	// default, so that a fleet whose cloud side does not sign yet keeps
	// working). false accepts only desired state signed by one of the
	// trusted keys (edgectl deploy --key), naming this node or group.
	AllowUnsignedDesired bool `yaml:"allow_unsigned_desired"`
	// MaxModelBytes bounds the size of a version the node accepts.
	MaxModelBytes int64 `yaml:"max_model_bytes"`
	// Window is how many chunk topics are subscribed at once.
	Window int `yaml:"window"`
	// StallTimeout: the chunk window is re-subscribed after half of it
	// without a chunk, and a transfer attempt ends (transfer.ErrStalled)
	// after all of it, counting only time connected (and not time spent
	// waiting for the download rate or the fetch window);
	// transfer_attempts such attempts in a row fail the version.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// DownloadRate bounds the model bytes this node asks the broker for, in
	// bytes per second, for metered links (0: unlimited). A chunk is
	// subscribed only once a token bucket holds its size; the bucket holds
	// at most one largest chunk (about 1 MiB), so over any interval T the
	// node asks for at most download_rate × T plus that one chunk.
	DownloadRate int64 `yaml:"download_rate"`
	// FetchWindow is the daily window of local time in which model chunks
	// are fetched, "HH:MM-HH:MM" (24-hour clock; it may cross midnight,
	// "22:00-06:00"); empty means always. Outside it a transfer waits
	// (Downloading, reason OutsideFetchWindow); one running at its end asks
	// for no more chunks, lets those already asked for arrive, and resumes
	// in the next window from what the store holds.
	FetchWindow string `yaml:"fetch_window"`
	// TransferAttempts is how many transfer attempts in a row without
	// progress (backing off between them) a version gets before it is
	// Failed(TransferStalled); a newer desired generation tries again.
	TransferAttempts int `yaml:"transfer_attempts"`
	// BackoffMax bounds the delay between reconnection attempts.
	BackoffMax time.Duration `yaml:"backoff_max"`
	// MaxMessageBytes bounds one incoming MQTT message (topic and
	// payload): a larger one is discarded as it streams, never buffered,
	// and counted as rejected (reason oversize). The embedded broker
	// refuses larger packets too. At least mqttlink.MinMaxMessageBytes
	// (the protocol's largest message, a 1 MiB manifest or chunk).
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
}

// CloudTLS names PEM files for the broker connection.
type CloudTLS struct {
	// CAFile is the PEM bundle the broker's certificate is checked against
	// ("": the system roots).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the node's client certificate and key for
	// mTLS (both or neither).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the broker's certificate
	// ("": the broker URL's host).
	ServerName string `yaml:"server_name"`
}

// maxMQTTPacket is the largest Remaining Length MQTT 3.1.1 can encode.
const maxMQTTPacket = 268_435_455

// DefaultEmbeddedAddr is where the embedded broker listens by default.
const DefaultEmbeddedAddr = "127.0.0.1:1883"

func defaultCloudConfig() CloudConfig {
	return CloudConfig{
		EmbeddedAddr:  DefaultEmbeddedAddr,
		TopicRoot:     wire.DefaultRoot,
		MaxModelBytes: wire.DefaultMaxModelBytes,
		Window:        16,
		StallTimeout:  15 * time.Second,
		BackoffMax:    time.Minute,

		MaxMessageBytes:      mqttlink.DefaultMaxMessageBytes,
		AllowUnsignedDesired: true,

		TransferAttempts: 5,
	}
}

// nodeID is the configured node id, or the host name when none is set.
func (c CloudConfig) nodeID() (string, error) {
	if c.NodeID != "" {
		return c.NodeID, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cloud.node_id not set and no host name: %w", err)
	}
	h, _, _ = strings.Cut(h, ".")
	if err := wire.ValidName(h); err != nil {
		return "", fmt.Errorf("cloud.node_id not set and the host name %q is not a valid node id: %w", h, err)
	}
	return h, nil
}

// validate reports the first problem, naming the field.
func (c CloudConfig) validate() error {
	if c.Broker != "" {
		u, err := url.Parse(c.Broker)
		if err != nil {
			return fmt.Errorf("cloud.broker %q: %w", c.Broker, err)
		}
		switch u.Scheme {
		case "tcp", "ssl", "tls", "mqtt", "mqtts":
		default:
			return fmt.Errorf("cloud.broker %q: scheme %q, want tcp, ssl, tls, mqtt or mqtts", c.Broker, u.Scheme)
		}
		if u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("cloud.broker %q: want scheme://host:port", c.Broker)
		}
	}
	if c.EmbeddedAddr != "" {
		if _, _, err := net.SplitHostPort(c.EmbeddedAddr); err != nil {
			return fmt.Errorf("cloud.embedded_addr %q: %w", c.EmbeddedAddr, err)
		}
	}
	if c.NodeID != "" {
		if err := wire.ValidName(c.NodeID); err != nil {
			return fmt.Errorf("cloud.node_id: %w", err)
		}
	}
	seen := map[string]bool{}
	for _, g := range c.Groups {
		if err := wire.ValidName(g); err != nil {
			return fmt.Errorf("cloud.groups: %w", err)
		}
		if seen[g] {
			return fmt.Errorf("cloud.groups: %q twice", g)
		}
		seen[g] = true
	}
	if _, err := wire.NewTopics(c.TopicRoot); err != nil {
		return fmt.Errorf("cloud.topic_root: %w", err)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("cloud.tls: cert_file and key_file go together")
	}
	for k, v := range c.Labels {
		if err := wire.ValidName(k); err != nil {
			return fmt.Errorf("cloud.labels: key: %w", err)
		}
		if len(v) > 63 {
			return fmt.Errorf("cloud.labels.%s: value longer than 63 bytes", k)
		}
	}
	for _, f := range c.TrustedKeyFiles {
		if f == "" {
			return errors.New("cloud.trusted_key_files: empty path")
		}
	}
	for _, f := range c.RootKeyFiles {
		if f == "" {
			return errors.New("cloud.root_key_files: empty path")
		}
	}
	if c.MaxModelBytes <= 0 {
		return fmt.Errorf("cloud.max_model_bytes must be positive, got %d", c.MaxModelBytes)
	}
	if c.Window <= 0 || c.Window > 256 {
		return fmt.Errorf("cloud.window must be 1..256, got %d", c.Window)
	}
	if c.DownloadRate < 0 {
		return fmt.Errorf("cloud.download_rate must be 0 (unlimited) or positive bytes per second, got %d", c.DownloadRate)
	}
	if _, err := transfer.ParseFetchWindow(c.FetchWindow); err != nil {
		return fmt.Errorf("cloud.fetch_window: %w", err)
	}
	if c.TransferAttempts <= 0 {
		return fmt.Errorf("cloud.transfer_attempts must be positive, got %d", c.TransferAttempts)
	}
	if c.MaxMessageBytes < mqttlink.MinMaxMessageBytes || c.MaxMessageBytes > maxMQTTPacket {
		return fmt.Errorf("cloud.max_message_bytes must be %d..%d, got %d", mqttlink.MinMaxMessageBytes, maxMQTTPacket, c.MaxMessageBytes)
	}
	if c.StallTimeout <= 0 || c.BackoffMax <= 0 {
		return errors.New("cloud.stall_timeout and cloud.backoff_max must be positive")
	}
	return nil
}

// trustedKeys is the one key set that verifies manifests (in the store's
// Announce and on the link): store.trusted_keys plus cloud.trusted_key_files.
func trustedKeys(cfg Config) (models.KeySet, error) {
	ks, err := models.ParseTrustedKeys(cfg.Store.TrustedKeys)
	if err != nil {
		return nil, fmt.Errorf("store.trusted_keys: %w", err)
	}
	return ks, addKeyFiles(ks, "cloud.trusted_key_files", cfg.Cloud.TrustedKeyFiles)
}

// rootKeys are the keys that sign key lists: cloud.root_key_files.
func rootKeys(cfg Config) (models.KeySet, error) {
	ks := models.KeySet{}
	return ks, addKeyFiles(ks, "cloud.root_key_files", cfg.Cloud.RootKeyFiles)
}

func addKeyFiles(ks models.KeySet, key string, files []string) error {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		pub, err := models.ParsePublicKeyPEM(b)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", key, f, err)
		}
		ks.Add(pub)
	}
	return nil
}
