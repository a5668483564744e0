// Package kubetest starts the real Kubernetes control plane the tests of
// the ModelVersion controller use: etcd (Debian's etcd-server) and
// kube-apiserver built from the Go module proxy (scripts/kube-assets.sh),
// driven by controller-runtime's envtest with the committed CRD. One per
// test process, shared by its tests; Main stops it. Import it from _test.go
// files only.
package kubetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

var (
	once sync.Once
	cfg  *rest.Config
	err  error
	env  *envtest.Environment
)

// Main runs the tests and then stops the API server (call it from
// TestMain). client-go's and controller-runtime's process-wide loggers are
// silenced (set before any test runs: they are not safe to set later);
// each manager under test logs through its own logger.
func Main(m *testing.M) int {
	klog.SetLogger(logr.Discard())
	ctrllog.SetLogger(logr.Discard())
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kubetest: stop the API server:", err)
		}
	}
	return code
}

// CRDDir is the committed CRD folder (deploy/kubernetes/crd).
func CRDDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "kubernetes", "crd")
}

// Start returns the shared API server's admin config, starting it on
// first use with the CRD installed. Without the binaries in
// KUBEBUILDER_ASSETS it skips, except under make test
// (EDGE_REQUIRE_KUBE=1), where it fails: a silently skipped controller test
// would hide a missing install step.
func Start(t testing.TB) *rest.Config {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); dir == "" || err != nil {
			if os.Getenv("EDGE_REQUIRE_KUBE") != "" {
				t.Fatalf("%s not in KUBEBUILDER_ASSETS=%q (make deps builds it: scripts/kube-assets.sh)", bin, dir)
			}
			t.Skipf("%s not in KUBEBUILDER_ASSETS=%q (scripts/kube-assets.sh builds it)", bin, dir)
		}
	}
	once.Do(func() {
		env = &envtest.Environment{BinaryAssetsDirectory: dir, ErrorIfCRDPathMissing: true, CRDDirectoryPaths: []string{CRDDir()}}
		cfg, err = env.Start()
	})
	if err != nil {
		t.Fatalf("start etcd and kube-apiserver: %v", err)
	}
	return rest.CopyConfig(cfg)
}

var namespaces atomic.Int64

// Namespace creates a namespace named after prefix that no other test of
// the process (nor a repeat of this one, -count=N) uses, and returns its
// name.
func Namespace(t testing.TB, c client.Client, prefix string) string {
	t.Helper()
	name := strings.Trim(strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(prefix)), "-")
	name = fmt.Sprintf("%s-%d", name[:min(len(name), 50)], namespaces.Add(1))
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// User is a config for a new user of the shared API server with the given
// groups and no other rights than RBAC gives them.
func User(t testing.TB, name string, groups ...string) *rest.Config {
	t.Helper()
	Start(t)
	u, err := env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u.Config()
}

// Kubeconfig writes a kubeconfig for a new admin user (system:masters) of
// the shared API server into a temporary file and returns its path (for
// commands that read one).
func Kubeconfig(t testing.TB) string {
	t.Helper()
	Start(t)
	u, err := env.AddUser(envtest.User{Name: "kubetest-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := u.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
