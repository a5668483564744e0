// Package brokertest starts real MQTT brokers for tests: mosquitto (from
// Debian's package) on a free 127.0.0.1 port with a generated config in
// t.TempDir(), persistence on so it can be stopped, killed and restarted; and
// the embedded broker (sync/broker) for the single-device path.
package brokertest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeai/edge-node/sync/broker"
	"github.com/rs/zerolog"
)

// MosquittoPath is where Debian installs the broker.
var MosquittoPath = "/usr/sbin/mosquitto"

// Options adjust the generated mosquitto config.
type Options struct {
	// Extra lines appended to the listener's config (e.g. TLS files).
	ListenerConf []string
	// Extra lines appended to the global config.
	GlobalConf []string
	// TLS says the listener speaks TLS (URL uses ssl://).
	TLS bool
}

// Mosquitto is a mosquitto process owned by a test.
type Mosquitto struct {
	t    testing.TB
	Dir  string
	Port int
	opts Options
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMosquitto starts mosquitto and registers its shutdown with t.Cleanup.
// When mosquitto is not installed it skips the test for a developer running
// `go test` by hand, but fails it under `make test` and CI
// (EDGE_REQUIRE_BROKER=1, which the Makefile sets after installing it): a
// silently skipped broker test would hide a missing install step.
func StartMosquitto(t testing.TB, opts Options) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoPath); err != nil {
		if os.Getenv("EDGE_REQUIRE_BROKER") != "" {
			t.Fatalf("mosquitto not installed at %s (make deps installs it): %v", MosquittoPath, err)
		}
		t.Skipf("mosquitto not installed at %s (apt-get install mosquitto): %v", MosquittoPath, err)
	}
	m := &Mosquitto{t: t, Dir: t.TempDir(), Port: freePort(t), opts: opts}
	m.writeConfig()
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (m *Mosquitto) writeConfig() {
	lines := []string{
		fmt.Sprintf("listener %d 127.0.0.1", m.Port),
	}
	lines = append(lines, m.opts.ListenerConf...)
	lines = append(lines,
		"allow_anonymous true",
		"persistence true",
		"persistence_location "+m.Dir+"/",
		"autosave_interval 1",
		"log_dest file "+filepath.Join(m.Dir, "mosquitto.log"),
		"log_type error",
		"log_type warning",
		"log_type notice",
		"max_queued_messages 10000",
	)
	if os.Geteuid() == 0 {
		// Otherwise mosquitto drops to user "mosquitto", which cannot write
		// the persistence file into the test's private temp dir.
		lines = append(lines, "user root")
	}
	lines = append(lines, m.opts.GlobalConf...)
	if err := os.WriteFile(m.ConfigPath(), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		m.t.Fatal(err)
	}
}

// ConfigPath is the generated config file.
func (m *Mosquitto) ConfigPath() string { return filepath.Join(m.Dir, "mosquitto.conf") }

// Addr is host:port.
func (m *Mosquitto) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.Port) }

// URL is the broker URL for mqttlink.
func (m *Mosquitto) URL() string {
	if m.opts.TLS {
		return "ssl://" + m.Addr()
	}
	return "tcp://" + m.Addr()
}

// Start (re)starts mosquitto on the same port and data directory and waits
// until it accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	if m.cmd != nil {
		m.t.Fatal("brokertest: mosquitto already running")
	}
	cmd := exec.Command(MosquittoPath, "-c", m.ConfigPath())
	cmd.Stdout = nil
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("brokertest: start mosquitto: %v", err)
	}
	m.cmd = cmd
	m.done = make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(m.done)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.done:
			m.cmd = nil
			m.t.Fatalf("brokertest: mosquitto exited at start; log:\n%s", m.Log())
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("brokertest: mosquitto not listening on %s after 20s: %v; log:\n%s", m.Addr(), err, m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops mosquitto with SIGTERM (it saves its persistence file) and waits
// for it to exit. Stopping a stopped broker does nothing.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

// Kill stops mosquitto with SIGKILL: state not yet autosaved (1 s interval)
// is lost, as in a crash.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

func (m *Mosquitto) signal(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Running reports whether the process is up.
func (m *Mosquitto) Running() bool { return m.cmd != nil }

// PID is the running broker's process id (0 when stopped), for reading its
// CPU time in scale runs.
func (m *Mosquitto) PID() int {
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Log returns mosquitto's log file.
func (m *Mosquitto) Log() string {
	b, err := os.ReadFile(filepath.Join(m.Dir, "mosquitto.log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err.Error()
	}
	return string(b)
}

// StartEmbedded starts the embedded broker on a free loopback port and
// closes it with t.Cleanup.
func StartEmbedded(t testing.TB) *broker.Broker {
	t.Helper()
	b, err := broker.Start(broker.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
