// Package broker runs the embedded MQTT broker (github.com/mochi-mqtt/server)
// that a node starts when no broker is configured, so a single device works
// out of the box: the node, and edgectl on the same machine, connect to
// 127.0.0.1:1883.
//
// With DataDir set, retained messages, sessions and subscriptions persist in a
// bbolt file there, so desired state and manifests survive a restart.
package broker

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"
	"go.etcd.io/bbolt"
)

// DefaultAddr is where the embedded broker listens by default: loopback only.
const DefaultAddr = "127.0.0.1:1883"

// Config configures the embedded broker.
type Config struct {
	// Addr is the TCP listen address; empty means DefaultAddr. Use
	// "127.0.0.1:0" for a free port (tests).
	Addr string
	// DataDir, when set, holds broker.db (bbolt) for persistence.
	DataDir string
	// TLS, when set, makes the listener TLS (set ClientAuth for mTLS).
	TLS *tls.Config
	// MaxPacketBytes bounds one MQTT packet; 0 means 2 MiB.
	MaxPacketBytes uint32
}

// Broker is a running embedded broker.
type Broker struct {
	srv  *mqtt.Server
	tcp  *listeners.TCP
	once sync.Once
	err  error
}

// Start starts the broker and returns once it is listening. It accepts any
// client (no auth): bind it to loopback unless TLS with client certificates
// is configured.
func Start(cfg Config, log zerolog.Logger) (*Broker, error) {
	log = log.With().Str("component", "broker").Logger()
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketBytes
	if caps.MaximumPacketSize == 0 {
		caps.MaximumPacketSize = 2 << 20
	}
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})),
		// Retained chunks can be large; keep the $SYS noise low.
		SysTopicResendInterval: 60,
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		err := srv.AddHook(new(bolt.Hook), &bolt.Options{
			Path: filepath.Join(cfg.DataDir, "broker.db"),
			// A timeout, or a second process on the same file blocks for ever on flock.
			Options: &bbolt.Options{Timeout: 5 * time.Second},
		})
		if err != nil {
			return nil, fmt.Errorf("broker: persistence in %s: %w", cfg.DataDir, err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Addr, TLSConfig: cfg.TLS})
	if err := srv.AddListener(tcp); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("broker: listen on %s: %w", cfg.Addr, err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	log.Info().Str("addr", tcp.Address()).Bool("persistent", cfg.DataDir != "").Msg("embedded broker listening")
	return &Broker{srv: srv, tcp: tcp}, nil
}

// Addr returns the address the broker listens on (host:port).
func (b *Broker) Addr() string { return b.tcp.Address() }

// URL returns the broker's URL for mqttlink ("tcp://host:port" or "ssl://").
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Close stops the broker. It is idempotent.
func (b *Broker) Close() error {
	b.once.Do(func() { b.err = b.srv.Close() })
	return b.err
}
