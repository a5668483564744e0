package outbox

import (
	"fmt"
	"path/filepath"
	"testing"
)

func TestOrderLimitAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	b, err := Open(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i := 0; i < 5; i++ {
		d, err := b.Append("t", i%2 == 0, []byte(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		total += d
	}
	if total != 2 {
		t.Fatalf("dropped %d, want 2", total)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	b, err = Open(path, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ms, err := b.Oldest(10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, string(m.Payload))
	}
	if fmt.Sprint(got) != "[2 3 4]" || !ms[0].Retained || ms[1].Retained || ms[0].Topic != "t" {
		t.Fatalf("after reopen: %+v", ms)
	}
	if err := b.Remove(ms[0].Seq); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Len(); n != 2 {
		t.Fatalf("len %d, want 2", n)
	}
	if _, err := b.Append("", false, nil); err == nil {
		t.Fatal("empty topic accepted")
	}
}
