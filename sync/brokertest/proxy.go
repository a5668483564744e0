package brokertest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP relay in front of a broker that a test can take down and
// bring back, to cut a client's network without stopping the broker (the
// broker sees the socket drop, as with a real outage, and sends the Last
// Will). It counts the bytes it relays each way, so a test can measure
// what crosses a link exactly (a site broker's bridge to the fleet broker).
type Proxy struct {
	target string
	ln     net.Listener

	toTarget, fromTarget atomic.Int64 // bytes relayed, over all connections

	mu    sync.Mutex            // guards down and conns
	down  bool                  // refuse and cut connections
	conns map[net.Conn]struct{} // open client and broker sides
}

// NewProxy relays 127.0.0.1:<free port> to target until the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.SetDown(true) })
	return p
}

// URL is the proxy's tcp:// URL.
func (p *Proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

// SetDown cuts all relayed connections and refuses new ones (true), or
// accepts again (false).
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]struct{}{}
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		b, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go relay(b, c, &p.toTarget)
		go relay(c, b, &p.fromTarget)
	}
}

// Bytes returns the bytes relayed so far: from the clients to the target,
// and from the target to the clients.
func (p *Proxy) Bytes() (toTarget, fromTarget int64) {
	return p.toTarget.Load(), p.fromTarget.Load()
}

func relay(dst, src net.Conn, n *atomic.Int64) {
	_, _ = io.Copy(countingWriter{dst, n}, src)
	dst.Close()
	src.Close()
}

// countingWriter adds what it writes to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	k, err := c.w.Write(b)
	c.n.Add(int64(k))
	return k, err
}
