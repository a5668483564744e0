package mqttlink_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/mqttlink"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
)

const deadline = 30 * time.Second

// startLink runs a Link until the test ends.
func startLink(t *testing.T, cfg mqttlink.Config, ob mqttlink.Outbox) *mqttlink.Link {
	t.Helper()
	l, _ := mqttlinktest.Start(t, cfg, mqttlinktest.Options{Outbox: ob})
	return l
}

// collector gathers payloads received on a topic.
type collector struct {
	mu   sync.Mutex // guards msgs
	msgs []string
}

func newCollector() *collector { return &collector{} }

func (c *collector) handle(_ string, p []byte) {
	c.mu.Lock()
	c.msgs = append(c.msgs, string(p))
	c.mu.Unlock()
}

// waitFor waits until cond holds on the messages and returns them.
func (c *collector) waitFor(t *testing.T, what string, cond func([]string) bool) []string {
	t.Helper()
	var msgs []string
	defer func() {
		if t.Failed() {
			t.Logf("messages: %q", msgs)
		}
	}()
	testwait.For(t, what, func() bool {
		c.mu.Lock()
		msgs = append([]string(nil), c.msgs...)
		c.mu.Unlock()
		return cond(msgs)
	}, deadline)
	return msgs
}

// memOutbox is an Outbox in memory (the node's is its model store's).
type memOutbox struct {
	mu   sync.Mutex // guards msgs
	msgs []mqttlink.OutboxMessage
}

func (o *memOutbox) add(topic string, payload string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, mqttlink.OutboxMessage{Seq: uint64(len(o.msgs) + 1), Topic: topic, Payload: []byte(payload)})
}

func (o *memOutbox) Oldest(_ context.Context, n int) ([]mqttlink.OutboxMessage, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]mqttlink.OutboxMessage(nil), o.msgs[:min(n, len(o.msgs))]...), nil
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
	node := startLink(t, mqttlink.Config{BrokerURL: proxy.URL(), ClientID: "edge-node-n1", OutboxBatch: 2}, ob)
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
	testwait.For(t, "the outbox emptied", func() bool { n, _ := ob.Len(context.Background()); return n == 0 }, deadline)
}

func TestWillMarksOfflineAndSubscriptionsSurvive(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	proxy := brokertest.NewProxy(t, m.Addr())
	obs := startLink(t, mqttlink.Config{BrokerURL: m.URL(), ClientID: "observer"}, nil)
	presence := newCollector()
	_ = obs.Subscribe(context.Background(), presence.handle, "edgeai/v1/nodes/n1/presence")
	node := startLink(t, mqttlink.Config{BrokerURL: proxy.URL(), ClientID: "edge-node-n1",
		Will: &mqttlink.Message{Topic: "edgeai/v1/nodes/n1/presence", Payload: []byte("offline"), Retained: true}}, nil)
	desired := newCollector()
	_ = node.Subscribe(context.Background(), desired.handle, "edgeai/v1/nodes/n1/desired")
	mqttlinktest.WaitUp(t, node)
	mqttlinktest.WaitUp(t, obs)
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
	tlsFiles := mqttlink.TLSFiles{CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	l := startLink(t, mqttlink.Config{BrokerURL: m.URL(), ClientID: "tls-node", Username: "node1", Password: "s3cret", TLS: tlsFiles}, nil)
	got := newCollector()
	_ = l.Subscribe(context.Background(), got.handle, "edgeai/v1/x")
	mqttlinktest.WaitUp(t, l)
	if err := l.Publish(context.Background(), "edgeai/v1/x", false, []byte("over mTLS")); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, "message over mTLS", func(m []string) bool { return len(m) == 1 })

	// Refused: no client certificate; wrong password. The link keeps
	// trying; each attempt it makes fails.
	for name, cfg := range map[string]mqttlink.Config{
		"no client cert": {BrokerURL: m.URL(), ClientID: "c2", Username: "node1", Password: "s3cret", TLS: mqttlink.TLSFiles{CAFile: certs.CA}},
		"bad password":   {BrokerURL: m.URL(), ClientID: "c3", Username: "node1", Password: "nope", TLS: tlsFiles},
	} {
		reg := prometheus.NewRegistry()
		bad, stop := mqttlinktest.Start(t, cfg, mqttlinktest.Options{Registerer: reg})
		testwait.For(t, name+": a refused connection attempt", func() bool { return counter(t, reg, "edge_link_connect_errors_total") >= 2 }, deadline)
		if bad.IsConnected() || counter(t, reg, "edge_link_connects_total") != 0 {
			t.Fatalf("%s: connected", name)
		}
		stop()
	}
}

// counter reads a counter of reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestEmbeddedBrokerRetained(t *testing.T) {
	b := brokertest.StartEmbedded(t)
	pub := startLink(t, mqttlink.Config{BrokerURL: b.URL(), ClientID: "edgectl"}, nil)
	mqttlinktest.WaitUp(t, pub)
	if err := pub.Publish(context.Background(), "edgeai/v1/nodes/n1/desired", true, []byte("retained")); err != nil {
		t.Fatal(err)
	}
	node := startLink(t, mqttlink.Config{BrokerURL: b.URL(), ClientID: "edge-node-n1"}, nil)
	got := newCollector()
	_ = node.Subscribe(context.Background(), got.handle, "edgeai/v1/nodes/+/desired")
	// At least once: the embedded broker (mochi-mqtt v2.7.9) now and then
	// delivers a retained message twice on one SUBSCRIBE (QoS 1 allows it).
	got.waitFor(t, "retained message", func(m []string) bool {
		return len(m) >= 1 && !slices.ContainsFunc(m, func(s string) bool { return s != "retained" })
	})
}

func TestConfigErrors(t *testing.T) {
	if _, err := mqttlink.New(mqttlink.Config{ClientID: "x"}, nil, zerolog.Nop(), nil); err == nil {
		t.Fatal("missing broker accepted")
	}
	if _, err := mqttlink.New(mqttlink.Config{BrokerURL: "tcp://127.0.0.1:1", ClientID: "x", TLS: mqttlink.TLSFiles{CAFile: "/nonexistent"}}, nil, zerolog.Nop(), nil); err == nil {
		t.Fatal("missing CA file accepted")
	}
	l, _ := mqttlink.New(mqttlink.Config{BrokerURL: "tcp://127.0.0.1:1", ClientID: "x"}, nil, zerolog.Nop(), nil)
	if err := l.Publish(context.Background(), "t", false, nil); err != mqttlink.ErrNotConnected {
		t.Fatalf("publish while down: %v", err)
	}
}
