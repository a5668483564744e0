package mqttlink

import (
	"context"
	"fmt"
	paho "github.com/eclipse/paho.mqtt.golang"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/sync/brokertest"
)

const deadline = 30 * time.Second

// startLink runs a Link until the test ends.
func startLink(t *testing.T, cfg Config, ob Outbox) *Link {
	t.Helper()
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	}
	l, err := New(cfg, ob, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; l.Close() })
	return l
}

// collector gathers payloads received on a topic.
type collector struct {
	mu   sync.Mutex
	msgs []string
	ch   chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) handle(_ string, p []byte) {
	c.mu.Lock()
	c.msgs = append(c.msgs, string(p))
	c.mu.Unlock()
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// waitFor waits (generous deadline) until cond holds on the messages.
func (c *collector) waitFor(t *testing.T, what string, cond func([]string) bool) []string {
	t.Helper()
	end := time.After(deadline)
	for {
		c.mu.Lock()
		msgs := append([]string(nil), c.msgs...)
		c.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-c.ch:
		case <-end:
			t.Fatalf("timed out waiting for %s; have %q", what, msgs)
		}
	}
}

func waitUp(t *testing.T, l *Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if err := l.WaitConnected(ctx); err != nil {
		t.Fatalf("not connected: %v", err)
	}
}

// memOutbox is an Outbox in memory (the node's is its model store's).
type memOutbox struct {
	mu   sync.Mutex // guards msgs
	msgs []OutboxMessage
}

func (o *memOutbox) add(topic string, payload string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, OutboxMessage{Seq: uint64(len(o.msgs) + 1), Topic: topic, Payload: []byte(payload)})
}

func (o *memOutbox) Oldest(_ context.Context, n int) ([]OutboxMessage, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]OutboxMessage(nil), o.msgs[:min(n, len(o.msgs))]...), nil
}

func (o *memOutbox) Remove(_ context.Context, seq uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, m := range o.msgs {
		if m.Seq == seq {
			o.msgs = append(o.msgs[:i], o.msgs[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("no message %d", seq)
}

func (o *memOutbox) Len(context.Context) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.msgs), nil
}

func TestOutboxFlushesInOrderAfterOutage(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	proxy := brokertest.NewProxy(t, m.Addr())
	// The observer is a plain paho client with ordered delivery: Link
	// dispatches handlers concurrently (OrderMatters false), which would
	// shuffle what this test checks — the order on the wire.
	got := newCollector()
	obs := paho.NewClient(paho.NewClientOptions().AddBroker(m.URL()).SetClientID("observer").SetOrderMatters(true))
	if tok := obs.Connect(); !tok.WaitTimeout(deadline) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	defer obs.Disconnect(0)
	if tok := obs.Subscribe("edgeai/v1/nodes/n1/events", 1, func(_ paho.Client, msg paho.Message) {
		got.handle(msg.Topic(), msg.Payload())
	}); !tok.WaitTimeout(deadline) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}

	ob := &memOutbox{}
	proxy.SetDown(true) // the node starts offline
	node := startLink(t, Config{BrokerURL: proxy.URL(), ClientID: "edge-node-n1", OutboxBatch: 2}, ob)
	for i := 0; i < 5; i++ {
		ob.add("edgeai/v1/nodes/n1/events", fmt.Sprint(i))
		node.KickOutbox()
	}
	if node.IsConnected() {
		t.Fatal("node connected through a down proxy")
	}
	proxy.SetDown(false)
	msgs := got.waitFor(t, "5 events", func(m []string) bool { return len(m) >= 5 })
	if strings.Join(msgs, ",") != "0,1,2,3,4" {
		t.Fatalf("events = %v, want 0..4 in order", msgs)
	}
	end := time.Now().Add(deadline)
	for n, _ := ob.Len(context.Background()); n != 0; n, _ = ob.Len(context.Background()) {
		if time.Now().After(end) {
			t.Fatalf("outbox still holds %d", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWillMarksOfflineAndSubscriptionsSurvive(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	proxy := brokertest.NewProxy(t, m.Addr())
	obs := startLink(t, Config{BrokerURL: m.URL(), ClientID: "observer"}, nil)
	presence := newCollector()
	_ = obs.Subscribe(context.Background(), presence.handle, "edgeai/v1/nodes/n1/presence")
	node := startLink(t, Config{BrokerURL: proxy.URL(), ClientID: "edge-node-n1",
		Will: &Message{Topic: "edgeai/v1/nodes/n1/presence", Payload: []byte("offline"), Retained: true}}, nil)
	desired := newCollector()
	_ = node.Subscribe(context.Background(), desired.handle, "edgeai/v1/nodes/n1/desired")
	waitUp(t, node)
	waitUp(t, obs)
	if err := node.Publish(context.Background(), "edgeai/v1/nodes/n1/presence", true, []byte("online")); err != nil {
		t.Fatal(err)
	}
	presence.waitFor(t, "online", func(m []string) bool { return len(m) > 0 && m[len(m)-1] == "online" })

	proxy.SetDown(true) // abrupt: no DISCONNECT, so the broker sends the will
	presence.waitFor(t, "will", func(m []string) bool { return len(m) > 0 && m[len(m)-1] == "offline" })

	// While the node is away, a QoS 1 message for it queues in its session.
	if err := obs.Publish(context.Background(), "edgeai/v1/nodes/n1/desired", false, []byte("gen-2")); err != nil {
		t.Fatal(err)
	}
	proxy.SetDown(false)
	desired.waitFor(t, "queued message", func(m []string) bool { return len(m) == 1 && m[0] == "gen-2" })
}

func TestMutualTLSAndPassword(t *testing.T) {
	certs := brokertest.GenerateCerts(t)
	pwfile := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pwfile, "node1", "s3cret").CombinedOutput(); err != nil {
		t.Skipf("mosquitto_passwd: %v %s", err, out)
	}
	m := brokertest.StartMosquitto(t, brokertest.Options{
		TLS:          true,
		ListenerConf: append(certs.MosquittoTLS(true), "password_file "+pwfile, "allow_anonymous false"),
	})
	tlsFiles := TLSFiles{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	l := startLink(t, Config{BrokerURL: m.URL(), ClientID: "tls-node", Username: "node1", Password: "s3cret", TLS: tlsFiles}, nil)
	got := newCollector()
	_ = l.Subscribe(context.Background(), got.handle, "edgeai/v1/x")
	waitUp(t, l)
	if err := l.Publish(context.Background(), "edgeai/v1/x", false, []byte("over mTLS")); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, "message over mTLS", func(m []string) bool { return len(m) == 1 })

	// Refused: no client certificate; wrong password.
	for name, cfg := range map[string]Config{
		"no client cert": {BrokerURL: m.URL(), ClientID: "c2", Username: "node1", Password: "s3cret", TLS: TLSFiles{CAFile: certs.CA}},
		"bad password":   {BrokerURL: m.URL(), ClientID: "c3", Username: "node1", Password: "nope", TLS: tlsFiles},
	} {
		bad, err := New(cfg, nil, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		tok := bad.client.Connect()
		if !tok.WaitTimeout(deadline) {
			t.Fatalf("%s: connect did not finish", name)
		}
		if tok.Error() == nil {
			t.Fatalf("%s: connected", name)
		}
		bad.Close()
	}
}

func TestEmbeddedBrokerRetained(t *testing.T) {
	b := brokertest.StartEmbedded(t)
	pub := startLink(t, Config{BrokerURL: b.URL(), ClientID: "edgectl"}, nil)
	waitUp(t, pub)
	if err := pub.Publish(context.Background(), "edgeai/v1/nodes/n1/desired", true, []byte("retained")); err != nil {
		t.Fatal(err)
	}
	node := startLink(t, Config{BrokerURL: b.URL(), ClientID: "edge-node-n1"}, nil)
	got := newCollector()
	_ = node.Subscribe(context.Background(), got.handle, "edgeai/v1/nodes/+/desired")
	got.waitFor(t, "retained message", func(m []string) bool { return len(m) == 1 && m[0] == "retained" })
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{ClientID: "x"}, nil, zerolog.Nop(), nil); err == nil {
		t.Fatal("missing broker accepted")
	}
	if _, err := New(Config{BrokerURL: "tcp://127.0.0.1:1", ClientID: "x", TLS: TLSFiles{CAFile: "/nonexistent"}}, nil, zerolog.Nop(), nil); err == nil {
		t.Fatal("missing CA file accepted")
	}
	l, _ := New(Config{BrokerURL: "tcp://127.0.0.1:1", ClientID: "x"}, nil, zerolog.Nop(), nil)
	if err := l.Publish(context.Background(), "t", false, nil); err != ErrNotConnected {
		t.Fatalf("publish while down: %v", err)
	}
}
