package rollout

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/edgeai/edge-node/internal/testwait"
)

// browser is headless Chromium driven over the DevTools protocol on
// --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4: no
// websocket, no dependency), attached to one page. It accepts every
// JavaScript dialog, answering prompts with promptText, and records their
// messages.
type browser struct {
	t       *testing.T
	w       io.Writer
	session string

	mu      sync.Mutex // guards the fields below
	nextID  int
	pending map[int]chan cdpMsg
	dialogs []string
	prompt  string
}

type cdpMsg struct {
	ID        int             `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct{ Message string }
	SessionID string `json:"sessionId,omitempty"`
}

// requireChromium returns Debian's chromium, or skips the test when it is
// missing (fails under EDGE_REQUIRE_BROWSER=1).
func requireChromium(t *testing.T) string {
	t.Helper()
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("EDGE_REQUIRE_BROWSER") != "" {
			t.Fatalf("chromium not installed (apt-get install chromium): %v", err)
		}
		t.Skipf("chromium not installed: %v", err)
	}
	return chromium
}

// startBrowser starts headless Chromium with a width×height page, until
// the test ends.
func startBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	chromium := requireChromium(t)
	toR, toW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromR, fromW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toR, fromW} // the child's fd 3 (reads) and 4 (writes)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	toR.Close()
	fromW.Close()
	b := &browser{t: t, w: toW, pending: map[int]chan cdpMsg{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.read(bufio.NewReader(fromR))
	}()
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		// Browser.close lets Chromium stop its helper processes and finish
		// writing its profile (a kill would leave them writing into the
		// temporary directory as it is removed); kill only if it hangs.
		b.send("", "Browser.close", nil)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cancel()
			<-exited
		}
		cancel()
		toW.Close()
		fromR.Close()
		<-done
	})
	var target struct{ TargetID string }
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var att struct{ SessionID string }
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	b.do("Page.enable", nil)
	b.do("Runtime.enable", nil)
	b.do("Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false})
	return b
}

func (b *browser) read(r *bufio.Reader) {
	for {
		line, err := r.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var m cdpMsg
		if json.Unmarshal(line[:len(line)-1], &m) != nil {
			continue
		}
		if m.ID != 0 {
			b.mu.Lock()
			ch := b.pending[m.ID]
			delete(b.pending, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- m
			}
			continue
		}
		if m.Method == "Page.javascriptDialogOpening" {
			var d struct{ Message, Type string }
			_ = json.Unmarshal(m.Params, &d)
			b.mu.Lock()
			b.dialogs = append(b.dialogs, d.Type+": "+d.Message)
			text := b.prompt
			b.mu.Unlock()
			// Answered without waiting: the reader must keep reading.
			b.send(m.SessionID, "Page.handleJavaScriptDialog", map[string]any{"accept": true, "promptText": text})
		}
	}
}

func (b *browser) send(session, method string, params any) chan cdpMsg {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpMsg, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method}
	if params != nil {
		msg["params"] = params
	}
	if session != "" {
		msg["sessionId"] = session
	}
	raw, _ := json.Marshal(msg)
	if _, err := b.w.Write(append(raw, 0)); err != nil {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		close(ch)
	}
	return ch
}

func (b *browser) call(session, method string, params, result any) {
	b.t.Helper()
	select {
	case m, ok := <-b.send(session, method, params):
		if !ok {
			b.t.Fatalf("%s: browser gone", method)
		}
		if m.Error != nil {
			b.t.Fatalf("%s: %s", method, m.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				b.t.Fatalf("%s: %v", method, err)
			}
		}
	case <-time.After(60 * time.Second):
		b.t.Fatalf("%s: no answer from the browser", method)
	}
}

// do calls method on the page.
func (b *browser) do(method string, params any) { b.t.Helper(); b.call(b.session, method, params, nil) }

// navigate loads url in the page and waits until it has loaded.
func (b *browser) navigate(url string) {
	b.t.Helper()
	b.do("Page.navigate", map[string]any{"url": url})
	testwait.For(b.t, "the page at "+url+" to load", func() bool {
		var ok bool
		_ = json.Unmarshal(b.eval(`document.readyState === "complete" && location.href === `+js(url)), &ok)
		return ok
	}, time.Minute)
}

// eval runs expr in the page (awaiting a promise) and returns its value
// as JSON.
func (b *browser) eval(expr string) json.RawMessage {
	b.t.Helper()
	var res struct {
		Result           struct{ Value json.RawMessage }
		ExceptionDetails *struct {
			Text      string
			Exception struct{ Description string }
		}
	}
	b.call(b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res)
	if e := res.ExceptionDetails; e != nil {
		b.t.Fatalf("eval %s: %s %s", expr, e.Text, e.Exception.Description)
	}
	return res.Result.Value
}

// evalString is eval of an expression whose value is a string.
func (b *browser) evalString(expr string) string {
	b.t.Helper()
	var s string
	if err := json.Unmarshal(b.eval(expr), &s); err != nil {
		b.t.Fatalf("eval %s: not a string: %v", expr, err)
	}
	return s
}

// screenshot saves the whole page as a PNG at path and returns it decoded.
func (b *browser) screenshot(path string) image.Image {
	b.t.Helper()
	var lm struct {
		CSSContentSize struct{ Width, Height float64 }
	}
	b.call(b.session, "Page.getLayoutMetrics", nil, &lm)
	var shot struct{ Data string }
	b.call(b.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": lm.CSSContentSize.Width, "height": lm.CSSContentSize.Height, "scale": 1}}, &shot)
	data, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", path, err)
	}
	return img
}

// setPrompt sets the text prompts are answered with.
func (b *browser) setPrompt(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.prompt = s
}

// dialogSeen returns the dialogs opened so far ("prompt: message").
func (b *browser) dialogSeen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogs...)
}

// js quotes s as a JavaScript string.
func js(s string) string { b, _ := json.Marshal(s); return string(b) }
