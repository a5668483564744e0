package brokertest

import (
	"net"
	"testing"
)

func TestMosquittoStopRestart(t *testing.T) {
	m := StartMosquitto(t, Options{})
	m.Stop()
	if _, err := net.Dial("tcp", m.Addr()); err == nil {
		t.Fatal("broker still accepting after Stop")
	}
	m.Start()
	c, err := net.Dial("tcp", m.Addr())
	if err != nil {
		t.Fatalf("not accepting after restart: %v", err)
	}
	c.Close()
	m.Kill()
	m.Start()
	if !m.Running() {
		t.Fatal("not running after restart")
	}
}
