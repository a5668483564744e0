package brokertest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP relay in front of a broker that a test can take down and
// bring back, to cut a client's network without stopping the broker (the
// broker sees the socket drop, as with a real outage, and sends the Last
// Will).
type Proxy struct {
	target string
	ln     net.Listener

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
		go relay(c, b)
		go relay(b, c)
	}
}

func relay(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}
