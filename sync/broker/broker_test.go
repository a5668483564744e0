package broker

import (
	"net"
	"testing"

	"github.com/rs/zerolog"
)

func TestStartCloseIdempotent(t *testing.T) {
	b, err := Start(Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatalf("dial %s: %v", b.Addr(), err)
	}
	c.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestAddrInUse(t *testing.T) {
	b, err := Start(Config{Addr: "127.0.0.1:0"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b2, err := Start(Config{Addr: b.Addr()}, zerolog.Nop()); err == nil {
		b2.Close()
		t.Fatal("second broker on the same address started")
	}
}
