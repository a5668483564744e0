package mqttlink_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"

	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
)

// oversizeRSSBytes is the message the memory test sends: issue 14's 200 MiB.
const oversizeRSSBytes = 200 << 20

// TestOversizeMessageRSS receives a 200 MiB message on a subscribed topic in
// a child process (so that no other test's memory counts) and checks that
// the child's peak RSS (VmHWM) grew by less than rssBound: the message is
// discarded as it streams, never buffered.
func TestOversizeMessageRSS(t *testing.T) {
	if os.Getenv("EDGE_RSS_CHILD") != "" {
		t.Skip("the child runs TestOversizeMessageRSSChild")
	}
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	payload := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(oversizeRSSBytes); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOversizeMessageRSSChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "EDGE_RSS_CHILD=1", "EDGE_RSS_BROKER="+m.URL(), "EDGE_RSS_PORT="+strconv.Itoa(m.Port), "EDGE_RSS_FILE="+payload)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var before, after int64
	for _, line := range strings.Split(string(out), "\n") {
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "VmHWM before=%d after=%d", &before, &after); err == nil {
			break
		}
	}
	if after == 0 {
		t.Fatalf("no VmHWM line from the child:\n%s", out)
	}
	const rssBound = 16 << 20
	t.Logf("peak RSS (VmHWM) receiving a %d MiB message: %d KiB before, %d KiB after (+%d KiB)",
		oversizeRSSBytes>>20, before>>10, after>>10, (after-before)>>10)
	if after-before >= rssBound {
		t.Fatalf("VmHWM grew by %d MiB receiving a %d MiB message, bound %d MiB", (after-before)>>20, oversizeRSSBytes>>20, rssBound>>20)
	}
}

// TestOversizeMessageRSSChild is the child of TestOversizeMessageRSS.
func TestOversizeMessageRSSChild(t *testing.T) {
	if os.Getenv("EDGE_RSS_CHILD") == "" {
		t.Skip("run by TestOversizeMessageRSS")
	}
	const topic = "edgeai/v1/nodes/n1/desired"
	l := startLink(t, mqttlink.Config{BrokerURL: os.Getenv("EDGE_RSS_BROKER"), ClientID: "edge-node-n1"}, nil)
	got := newCollector()
	if err := l.Subscribe(context.Background(), got.handle, topic); err != nil {
		t.Fatal(err)
	}
	mqttlinktest.WaitUp(t, l)
	// The subscription is in place once a message through it arrives.
	if err := l.Publish(context.Background(), topic, false, []byte("before")); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, "before", func(m []string) bool { return len(m) == 1 })
	before := vmHWM(t)
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", os.Getenv("EDGE_RSS_PORT"),
		"-t", topic, "-q", "1", "-f", os.Getenv("EDGE_RSS_FILE")).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	if err := l.Publish(context.Background(), topic, false, []byte("after")); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, "after", func(m []string) bool { return len(m) > 0 && m[len(m)-1] == "after" })
	fmt.Printf("VmHWM before=%d after=%d\n", before, vmHWM(t))
}

// vmHWM is this process's peak resident set size in bytes.
func vmHWM(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// oversizeSeen records what OnOversize was told.
type oversizeSeen struct {
	mu    sync.Mutex // guards sizes
	sizes []int64
}

func (o *oversizeSeen) add(topic string, size int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if topic == "edgeai/v1/nodes/n1/desired" {
		o.sizes = append(o.sizes, size)
	}
}

func (o *oversizeSeen) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.sizes)
}

// TestRetainedOversizeMessageSkipped: a retained message over the limit is
// discarded unread and reported on every subscription (each reconnect),
// acknowledged, and the link stays up and keeps receiving: one retained
// message cannot cut a node off.
func TestRetainedOversizeMessageSkipped(t *testing.T) {
	const topic = "edgeai/v1/nodes/n1/desired"
	const size = 3 << 20
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	proxy := brokertest.NewProxy(t, m.Addr())
	big := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(big, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(m.Port),
		"-t", topic, "-q", "1", "-r", "-f", big).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v %s", err, out)
	}
	seen := &oversizeSeen{}
	reg := prometheus.NewRegistry()
	l, _ := mqttlinktest.Start(t, mqttlink.Config{BrokerURL: proxy.URL(), ClientID: "edge-node-n1",
		MaxMessageBytes: mqttlink.MinMaxMessageBytes, OnOversize: seen.add}, mqttlinktest.Options{Registerer: reg})
	got := newCollector()
	if err := l.Subscribe(context.Background(), got.handle, topic); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the retained oversize message reported", func() bool { return seen.count() == 1 }, deadline)
	if seen.sizes[0] != size {
		t.Fatalf("reported size %d, want %d", seen.sizes[0], size)
	}
	if err := l.Publish(context.Background(), topic, false, []byte("small")); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, "a small message after it", func(m []string) bool { return len(m) == 1 && m[0] == "small" })

	// Reconnect: the retained message comes again with the restored
	// subscription, is skipped again, and the session stays up.
	proxy.SetDown(true)
	proxy.SetDown(false)
	testwait.For(t, "the retained oversize message reported after reconnecting", func() bool { return seen.count() == 2 }, deadline)
	mqttlinktest.WaitUp(t, l)
	if err := l.Publish(context.Background(), topic, false, []byte("again")); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, "a small message after reconnecting", func(m []string) bool { return len(m) == 2 && m[1] == "again" })
	if n := counter(t, reg, "edge_link_oversize_discarded_total"); n != 2 {
		t.Fatalf("edge_link_oversize_discarded_total = %v, want 2", n)
	}
	if n := counter(t, reg, "edge_link_connects_total"); n != 2 {
		t.Fatalf("%v connections, want 2 (no reconnect loop)", n)
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if slices.Contains(got.msgs, "") {
		t.Fatal("a handler saw the discarded message")
	}
}

func TestMaxMessageBytesMinimum(t *testing.T) {
	if _, err := mqttlink.New(mqttlink.Config{BrokerURL: "tcp://127.0.0.1:1", ClientID: "x", MaxMessageBytes: 1 << 20}, nil, zerolog.Nop(), nil); err == nil {
		t.Fatal("a limit under the protocol's largest message accepted")
	}
}
