package main

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/edgeai/edge-node/internal/testwait"
	"github.com/edgeai/edge-node/sync/brokertest"
	"github.com/edgeai/edge-node/sync/fleetsim"
	"github.com/edgeai/edge-node/sync/kube"
	"github.com/edgeai/edge-node/sync/kube/api/v1alpha1"
	"github.com/edgeai/edge-node/sync/kube/kubetest"
	"github.com/edgeai/edge-node/sync/mqttlink/mqttlinktest"
	"github.com/edgeai/edge-node/sync/wire"
)

func TestMain(m *testing.M) {
	setProcessLoggers = func(zerolog.Logger) {} // kubetest.Main silences them
	os.Exit(kubetest.Main(m))
}

func execute(ctx context.Context, args ...string) error {
	c := newRoot()
	c.SetArgs(args)
	return c.ExecuteContext(ctx)
}

// Every bad input and unreachable dependency ends the command at once with a
// message saying what is wrong.
func TestFailsFast(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	badKube := t.TempDir() + "/kubeconfig"
	if err := os.WriteFile(badKube, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+closed+`"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--broker is required"},
		{[]string{"--broker", "http://x"}, "scheme http is not MQTT"},
		{[]string{"--broker", "not a url"}, "is not a URL"},
		{[]string{"--broker", "tcp://" + closed}, "unreachable"},
		{[]string{"--broker", m.URL(), "--root", "a/+/b"}, "root"},
		{[]string{"--broker", m.URL(), "--log-level", "loud"}, "--log-level"},
		{[]string{"--broker", m.URL(), "--tick", "0s"}, "must be positive"},
		{[]string{"--broker", m.URL(), "--kubeconfig", "/nonexistent/kubeconfig"}, "--kubeconfig"},
		{[]string{"--broker", m.URL(), "--kubeconfig", badKube, "--connect-timeout", "2s"}, "Kubernetes API https://" + closed},
		{[]string{"extra"}, "unknown command"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		err := execute(ctx, c.args...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.args, err, c.want)
		}
		t.Logf("%q → %v (%v)", c.args, err, time.Since(start).Round(time.Millisecond))
	}
}

// fixture is what a run of the command needs: a kubeconfig for the shared
// API server, an admin client, a mosquitto, and a simulated fleet running
// det version 1 with det version 2 published (a stand-in manifest: the
// simulated nodes do not download).
type fixture struct {
	kubeconfig string
	client     client.Client
	broker     *brokertest.Mosquitto
	fleet      *fleetsim.Fleet
	tp         wire.Topics
}

func newFixture(t *testing.T, ctx context.Context, nodes int, p fleetsim.Profile, bo brokertest.Options) *fixture {
	t.Helper()
	x := &fixture{kubeconfig: kubetest.Kubeconfig(t), broker: brokertest.StartMosquitto(t, bo), tp: wire.Topics{Root: wire.DefaultRoot}}
	var err error
	x.fleet, err = fleetsim.Start(ctx, fleetsim.Config{BrokerURL: x.broker.URL(), Topics: x.tp, Nodes: nodes, Prefix: "cmd",
		Initial: map[string]string{"det": "1"}, Profile: p}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.fleet.Close)
	l := mqttlinktest.Connect(t, x.broker.URL(), "publisher")
	if err := l.Publish(ctx, x.tp.Manifest("det", "2"), true, []byte(`{"stand-in":"manifest"}`)); err != nil {
		t.Fatal(err)
	}
	scheme, err := kube.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	if x.client, err = client.New(kubetest.Start(t), client.Options{Scheme: scheme}); err != nil {
		t.Fatal(err)
	}
	return x
}

// The command, given a kubeconfig and a broker, rolls a ModelVersion out.
func TestRunsAModelVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	x := newFixture(t, ctx, 2, fleetsim.Profile{Download: 50 * time.Millisecond}, brokertest.Options{})
	f, c := x.fleet, x.client
	ns := kubetest.Namespace(t, c, "run")
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- execute(runCtx, "--broker", x.broker.URL(), "--kubeconfig", x.kubeconfig, "--leader-election-namespace", ns,
			"--namespace", ns, "--tick", "100ms", "--retained-wait", "300ms", "--health-addr", "127.0.0.1:0", "--log-level", "warn")
	}()
	mv := &v1alpha1.ModelVersion{ObjectMeta: metav1.ObjectMeta{Name: "det-v2", Namespace: ns},
		Spec: v1alpha1.ModelVersionSpec{Model: "det", Version: "2", TrafficWeight: 100}}
	if err := c.Create(ctx, mv); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "det-v2 Active", func() bool {
		if err := c.Get(ctx, client.ObjectKeyFromObject(mv), mv); err != nil {
			t.Fatal(err)
		}
		return mv.Status.Phase == v1alpha1.PhaseActive
	}, time.Minute)
	for id, v := range f.Active("det") {
		if v != "2" {
			t.Errorf("node %s runs %s", id, v)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("edge-controller after its context ended: %v", err)
	}
}
