package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeai/edge-node/node"
)

// notifyListener is a stand-in for systemd's notification socket: a
// unixgram socket in a temporary folder whose datagrams come out of msgs.
func notifyListener(t *testing.T) (path string, msgs <-chan string) {
	t.Helper()
	// A short folder: a socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path = filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := make(chan string, 1024)
	go func() {
		defer close(c)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			c <- string(buf[:n])
		}
	}()
	return path, c
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func readyStatus(addr string) int {
	resp, err := http.Get("http://" + addr + "/v2/health/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSystemdNotify runs the binary under a fake $NOTIFY_SOCKET as systemd
// would with Type=notify and WatchdogSec=: READY=1 comes only once
// /v2/health/ready answers 200 (a model loaded from the repository),
// WATCHDOG=1 comes at about half of $WATCHDOG_USEC, and STOPPING=1 comes
// on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	sock, msgs := notifyListener(t)
	repo := t.TempDir()
	copyModel(t, repo, "ppocr_cls", "1")
	addr := freeAddr(t)
	const watchdog = 400 * time.Millisecond
	env := []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=" + "400000"}
	start := time.Now()
	d := startDaemonEnv(t, env, "--data-dir", t.TempDir(), "--model-repository", repo, "--http-addr", addr)

	var readyAt time.Time
	var pings []time.Time
	timeout := time.After(time.Minute)
	for readyAt.IsZero() || len(pings) < 6 {
		select {
		case m := <-msgs:
			switch m {
			case "READY=1":
				if !readyAt.IsZero() {
					t.Errorf("READY=1 sent twice")
				}
				readyAt = time.Now()
				if code := readyStatus(addr); code != 200 {
					t.Errorf("READY=1 sent while /v2/health/ready answers %d", code)
				}
			case "WATCHDOG=1":
				if !readyAt.IsZero() {
					pings = append(pings, time.Now())
				}
			default:
				t.Errorf("unexpected notification %q", m)
			}
		case <-timeout:
			t.Fatalf("after a minute: READY=1 at %v, %d watchdog pings after it (%v since start):\n%s", readyAt, len(pings), time.Since(start), d.stderr)
		}
	}
	// The interval the node chose, half of WATCHDOG_USEC (pings at the full
	// interval would be late for systemd), from its log rather than from
	// the pings' timing, which a loaded test machine stretches.
	if l := logLine(t, d.stderr.String(), "systemd watchdog: pinging"); l["interval"] != (watchdog / 2).String() {
		t.Errorf("watchdog interval %v, want %v (half of WATCHDOG_USEC)", l["interval"], watchdog/2)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for stopping := false; !stopping; {
		select {
		case m := <-msgs:
			stopping = m == "STOPPING=1"
		case <-time.After(30 * time.Second):
			t.Fatalf("no STOPPING=1 within 30 s of SIGTERM:\n%s", d.stderr)
		}
	}
	if code := d.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, d.stderr)
	}
}

// TestSystemdCredentials: the admin token comes from the file systemd's
// LoadCredential= puts in $CREDENTIALS_DIRECTORY, as the unit names it.
func TestSystemdCredentials(t *testing.T) {
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "admin_token"), []byte("s3cret\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	d := startDaemonEnv(t, []string{"CREDENTIALS_DIRECTORY=" + creds}, "--data-dir", t.TempDir())
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Bearer s3cret", http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", "http://"+d.addr+"/admin/models", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("GET /admin/models with %q: %d, want %d", tc.auth, resp.StatusCode, tc.want)
		}
	}
}

// TestApplyCredentials: each credential file sets its secret, a missing
// one leaves the value from the config file, and an unreadable one is an
// error naming it.
func TestApplyCredentials(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	os.WriteFile(filepath.Join(dir, "broker_password"), []byte("pw\n"), 0o400)
	os.WriteFile(filepath.Join(dir, "kubeedge_eventbus_password"), []byte("eb"), 0o400)
	cfg := node.DefaultConfig()
	cfg.AdminToken = "from-file"
	if err := applyCredentials(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Cloud.Password != "pw" || cfg.KubeEdge.EventBus.Password != "eb" || cfg.AdminToken != "from-file" {
		t.Errorf("broker %q, eventbus %q, admin token %q; want pw, eb, from-file", cfg.Cloud.Password, cfg.KubeEdge.EventBus.Password, cfg.AdminToken)
	}
	if err := os.Mkdir(filepath.Join(dir, "admin_token"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := applyCredentials(&cfg); err == nil || !strings.Contains(err.Error(), "admin_token") {
		t.Errorf("admin_token a folder: error %v, want one naming admin_token", err)
	}
}

// The test binary doubles as a wrapper (TestMain): with mdweExecEnv set it
// turns on the kernel's memory-deny-write-execute for itself (prctl
// PR_SET_MDWE, Linux 6.3; kept across execve) and executes the program the
// variable names; with mdweProbeEnv set it tries to map memory writable
// and executable and exits 0 only if the kernel refused.
const (
	mdweExecEnv  = "EDGE_TEST_MDWE_EXEC"
	mdweProbeEnv = "EDGE_TEST_MDWE_PROBE"
	// mdweUnsupported is the wrapper's exit code when the kernel has no
	// PR_SET_MDWE.
	mdweUnsupported = 3
)

func execWithMDWE(program string) {
	if err := unix.Prctl(unix.PR_SET_MDWE, unix.PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "prctl(PR_SET_MDWE):", err)
		os.Exit(mdweUnsupported)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, mdweExecEnv+"=") })
	err := syscall.Exec(program, append([]string{program}, os.Args[1:]...), env)
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(1)
}

func probeWriteExecute() {
	b, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err == nil {
		unix.Munmap(b)
		fmt.Fprintln(os.Stderr, "a writable and executable mapping was allowed")
		os.Exit(1)
	}
	os.Exit(0)
}

// TestMemoryDenyWriteExecute: the unit's MemoryDenyWriteExecute=yes holds
// for edge-node with ONNX Runtime (CPU): under the kernel's equivalent
// (PR_SET_MDWE refuses what systemd's seccomp filter refuses, a mapping
// that is or becomes writable and executable) the node loads ppocr_cls,
// turns ready and answers an inference. The probe first shows that the
// protection reaches a program through execve.
func TestMemoryDenyWriteExecute(t *testing.T) {
	probe := exec.Command(os.Args[0], "-test.run=^$")
	probe.Env = append(os.Environ(), mdweExecEnv+"="+os.Args[0], mdweProbeEnv+"=1")
	out, err := probe.CombinedOutput()
	if probe.ProcessState != nil && probe.ProcessState.ExitCode() == mdweUnsupported {
		t.Skipf("the kernel has no PR_SET_MDWE (Linux 6.3 or later): %s", out)
	}
	if err != nil {
		t.Fatalf("probe under PR_SET_MDWE: %v\n%s", err, out)
	}

	repo := t.TempDir()
	copyModel(t, repo, "ppocr_cls", "1")
	d := startDaemonWith(t, os.Args[0], []string{mdweExecEnv + "=" + binary(t)}, "--data-dir", t.TempDir(), "--model-repository", repo)
	resp, err := http.Post("http://"+d.addr+"/v2/models/ppocr_cls/infer", "application/json", bytes.NewReader(clsBody()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("infer under PR_SET_MDWE: %d %s\n%s", resp.StatusCode, body, d.stderr)
	}
}

// TestSystemdUnit checks deploy/systemd as systemd reads it: `systemd-analyze
// verify` accepts the unit with no warning (it exits 0 on an unknown key, so
// any output fails), `systemd-analyze security --offline=yes` rates it 2.0
// or better (8.5 before the hardening), and systemd-sysusers makes the user
// the unit runs as from edge-node.sysusers. ExecStart points at the built
// binary in a copy of the unit: verify wants the program to exist.
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd): the unit is not checked")
	}
	unit, err := os.ReadFile("../../deploy/systemd/edge-node.service")
	if err != nil {
		t.Fatal(err)
	}
	const execStart = "ExecStart=/usr/local/bin/edge-node "
	if !bytes.Contains(unit, []byte("\n"+execStart)) {
		t.Fatalf("the unit has no %q line", execStart)
	}
	path := filepath.Join(t.TempDir(), "edge-node.service")
	if err := os.WriteFile(path, bytes.Replace(unit, []byte(execStart), []byte("ExecStart="+binary(t)+" "), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=20", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security --offline=yes --threshold=20 (2.0): %v\n%s", err, out)
	}
	score := regexp.MustCompile(`Overall exposure level for edge-node.service: ([0-9.]+)`).FindSubmatch(out)
	if score == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	t.Logf("systemd-analyze security: %s (at most 2.0 wanted)", score[1])

	if !strings.Contains(string(unit), "\nUser=edge-node\n") {
		t.Errorf("the unit does not run as User=edge-node, the user of edge-node.sysusers")
	}
	sysusers, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("systemd-sysusers not installed: edge-node.sysusers is not checked")
	}
	// Installed where a package puts it, in an empty root.
	root := t.TempDir()
	conf, err := os.ReadFile("../../deploy/systemd/edge-node.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr", "lib", "sysusers.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr", "lib", "sysusers.d", "edge-node.conf"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(sysusers, "--root="+root).CombinedOutput()
	if err != nil && os.Geteuid() != 0 {
		t.Skipf("systemd-sysusers --root needs root here (%v): edge-node.sysusers is not checked\n%s", err, out)
	}
	if err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^edge-node:x:\d+:\d+:[^:]*:/var/lib/edge-node:/usr/sbin/nologin$`).Match(passwd) {
		t.Errorf("systemd-sysusers made no edge-node system user with home /var/lib/edge-node:\n%s", passwd)
	}
}
