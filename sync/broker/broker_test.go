package broker

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/rs/zerolog"
)

func TestStartCloseIdempotent(t *testing.T) {
	b, err := Start(Config{Addr: "127.0.0.1:0", DataDir: t.TempDir()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	// A full MQTT session, ended before Close: mochi-mqtt v2.7.9 races
	// (under -race) when Close runs while a raw connection is still being
	// established, so the client is connected and gone first.
	c := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL()).SetClientID("close-test"))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", b.Addr(), tok.Error())
	}
	c.Disconnect(250)
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
