// Tests that the KubeEdge manifests in this folder parse with kubeedge/api's
// own types (and Kubernetes' for the DaemonSet), strictly, and agree with
// the node's property schema (package sync/kubeedge) and DMI defaults.
package kubeedge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	devices "github.com/kubeedge/api/apis/devices/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/edgeai/edge-node/sync/kubeedge"
	"github.com/edgeai/edge-node/sync/kubeedge/dmi"
)

// maxManifest bounds a manifest file.
const maxManifest = 1 << 20

// decodeStrict decodes one YAML document into v the way the API server
// would accept it: YAML → JSON, unknown or duplicate fields are errors,
// apiVersion and kind must match.
func decodeStrict(b []byte, apiVersion, kind string, v any) error {
	if len(b) > maxManifest {
		return fmt.Errorf("manifest of %d bytes, limit %d", len(b), maxManifest)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return err
	}
	var tm struct{ APIVersion, Kind string }
	if err := json.Unmarshal(j, &tm); err != nil {
		return err
	}
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		return fmt.Errorf("apiVersion %q kind %q, want %s %s", tm.APIVersion, tm.Kind, apiVersion, kind)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one document")
	}
	return nil
}

func documents(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range strings.Split(string(b), "\n---\n") {
		out = append(out, []byte(d))
	}
	return out
}

func TestDeviceAndModel(t *testing.T) {
	var model devices.DeviceModel
	if err := decodeStrict(documents(t, "devicemodel.yaml")[0], "devices.kubeedge.io/v1beta1", "DeviceModel", &model); err != nil {
		t.Fatalf("devicemodel.yaml: %v", err)
	}
	var dev devices.Device
	if err := decodeStrict(documents(t, "device.yaml")[0], "devices.kubeedge.io/v1beta1", "Device", &dev); err != nil {
		t.Fatalf("device.yaml: %v", err)
	}
	want := dmi.DefaultConfig().Protocol
	if model.Spec.Protocol != want || dev.Spec.Protocol.ProtocolName != want {
		t.Fatalf("protocols %q / %q, want the mapper's %q", model.Spec.Protocol, dev.Spec.Protocol.ProtocolName, want)
	}
	if dev.Spec.DeviceModelRef == nil || dev.Spec.DeviceModelRef.Name != model.Name {
		t.Fatalf("device refers to model %v, want %s", dev.Spec.DeviceModelRef, model.Name)
	}
	// Every model property follows the schema, with the right access mode,
	// and each model has all eight fields.
	fields := map[string]map[kubeedge.Field]bool{}
	declared := map[string]bool{}
	for _, p := range model.Spec.Properties {
		m, f, ok := kubeedge.SplitPropertyName(p.Name)
		if !ok || !kubeedge.ValidName(p.Name) {
			t.Errorf("model property %q does not follow <model>.<field>", p.Name)
			continue
		}
		wantMode := devices.ReadOnly
		if f.Writable() {
			wantMode = devices.ReadWrite
		}
		if p.AccessMode != wantMode {
			t.Errorf("%s: access mode %s, want %s", p.Name, p.AccessMode, wantMode)
		}
		if fields[m] == nil {
			fields[m] = map[kubeedge.Field]bool{}
		}
		fields[m][f] = true
		declared[p.Name] = true
	}
	for m, fs := range fields {
		for _, f := range kubeedge.Fields {
			if !fs[f] {
				t.Errorf("model %s lacks property %s", m, kubeedge.PropertyName(m, f))
			}
		}
	}
	// The Device's desired values are what the node accepts.
	var props []kubeedge.Property
	for _, p := range dev.Spec.Properties {
		if !declared[p.Name] {
			t.Errorf("device property %q is not in the DeviceModel", p.Name)
		}
		props = append(props, kubeedge.Property{Name: p.Name, Value: p.Desired.Value})
	}
	desired, rej := kubeedge.ParseDesired(props)
	if len(rej) != 0 || desired["silero_vad"].Version != "2" || desired["silero_vad"].Strategy.CanaryPercent != 10 || desired["ppocr_det"].Version != "1" {
		t.Fatalf("device.yaml desired %v, refusals %v", desired, rej)
	}
}

func TestDaemonSet(t *testing.T) {
	docs := documents(t, "daemonset.yaml")
	var ds appsv1.DaemonSet
	if err := decodeStrict(docs[0], "apps/v1", "DaemonSet", &ds); err != nil {
		t.Fatalf("daemonset: %v", err)
	}
	var cm corev1.ConfigMap
	if err := decodeStrict(docs[1], "v1", "ConfigMap", &cm); err != nil {
		t.Fatalf("configmap: %v", err)
	}
	spec := ds.Spec.Template.Spec
	if _, ok := spec.NodeSelector["node-role.kubernetes.io/edge"]; !ok {
		t.Fatalf("nodeSelector %v lacks node-role.kubernetes.io/edge", spec.NodeSelector)
	}
	hostPaths := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.HostPath.Path] = true
		}
	}
	// The store and the DMI socket folder, nothing else of the host: not
	// /etc/kubeedge, which holds EdgeCore's certificates and config.
	if len(hostPaths) != 2 || !hostPaths["/var/lib/edge-node"] || !hostPaths[dmiFolder] {
		t.Errorf("hostPath volumes %v: want exactly /var/lib/edge-node and %s", hostPaths, dmiFolder)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/etc/kubeedge" {
			t.Errorf("volume %s mounted on all of /etc/kubeedge", m.Name)
		}
	}

	// A pinned tag, pulled only when absent: an offline node restarts.
	name, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
	if !ok || name == "" || tag == "" || tag == "latest" {
		t.Errorf("image %q: want a pinned tag, not latest or none", c.Image)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy %q, want IfNotPresent", c.ImagePullPolicy)
	}

	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() || lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit at or above the request", c.Resources)
	}

	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/v2/health/ready"}, {"liveness", c.LivenessProbe, "/v2/health/live"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.IntValue() != 8080 {
			t.Errorf("%s probe %+v: want GET %s on port 8080", p.name, p.probe, p.path)
		}
	}

	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("securityContext %+v: want every capability dropped, no privilege escalation, a read-only root", sc)
	}

	// The config the pod runs sets the cloud explicitly and puts the DMI
	// sockets in the mounted folder. (That the node accepts it is
	// TestDaemonSetConfig in cmd/edge-node: only cmd/ may import node/.)
	var cfg struct {
		ORTLibrary string `json:"ort_library"`
		Cloud      struct {
			Disabled bool   `json:"disabled"`
			Broker   string `json:"broker"`
		} `json:"cloud"`
		KubeEdge struct {
			DMI struct {
				EdgeCoreSocket string `json:"edgecore_socket"`
				Socket         string `json:"socket"`
			} `json:"dmi"`
		} `json:"kubeedge"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("the ConfigMap's config.yaml: %v", err)
	}
	if !cfg.Cloud.Disabled && cfg.Cloud.Broker == "" {
		t.Errorf("the config sets neither cloud.disabled nor cloud.broker: with hostNetwork the embedded broker would listen on the host")
	}
	for what, sock := range map[string]string{"edgecore_socket": cfg.KubeEdge.DMI.EdgeCoreSocket, "socket": cfg.KubeEdge.DMI.Socket} {
		if filepath.Dir(sock) != dmiFolder {
			t.Errorf("kubeedge.dmi.%s %q is not in the mounted %s", what, sock, dmiFolder)
		}
	}
	if cfg.ORTLibrary != "/usr/lib/edge-node/libonnxruntime.so.1" {
		t.Errorf("ort_library %q, want the image's /usr/lib/edge-node/libonnxruntime.so.1", cfg.ORTLibrary)
	}
}

// dmiFolder is the host folder EdgeCore's dmiSockPath names in the
// DaemonSet's setup (operations.md): both DMI sockets, nothing else.
const dmiFolder = "/etc/kubeedge/dmi"

// dockerInstruction is one instruction of a Dockerfile: its keyword, upper
// case, and the rest of its line with continuations joined.
type dockerInstruction struct{ cmd, args string }

// parseDockerfile splits a Dockerfile into instructions, dropping comments
// and blank lines, and returns the comment text apart.
func parseDockerfile(t *testing.T, path string) (ins []dockerInstruction, comments string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			comments += trimmed + "\n"
			continue
		}
		if trimmed == "" && cur.Len() == 0 {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		ins = append(ins, dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return ins, comments
}

// TestDockerfile checks the image's recipe by reading it, so its rules hold
// where buildah is absent (make image-test builds and runs the image): bases named in full (podman and buildah refuse
// short names), a build context without .git, .cache, bin and dist, the
// final stage not root and with a HEALTHCHECK on readiness, the version
// stamped where the binaries read it, and CPU only said plainly.
// repoCache matches a relative path into the repository's .cache.
var repoCache = regexp.MustCompile(`(^|[\s=])(\./)?\.cache/`)

func TestDockerfile(t *testing.T) {
	ins, comments := parseDockerfile(t, "Dockerfile")
	var last []dockerInstruction // the final stage
	stages := 0
	for _, in := range ins {
		if in.cmd != "FROM" {
			last = append(last, in)
			continue
		}
		stages++
		last = nil
		var image string
		for _, f := range strings.Fields(in.args) {
			if !strings.HasPrefix(f, "--") {
				image = f
				break
			}
		}
		host, _, ok := strings.Cut(image, "/")
		if !ok || !strings.ContainsAny(host, ".:") || !strings.Contains(image, ":") {
			t.Errorf("FROM %s: want a fully qualified image with a tag (docker.io/library/...:tag)", in.args)
		}
	}
	if stages < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", stages)
	}
	var user, health string
	for _, in := range last {
		switch in.cmd {
		case "USER":
			user = in.args
		case "HEALTHCHECK":
			health = in.args
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("the final stage runs as %q: want a non-root USER", user)
	}
	if !strings.Contains(health, "/v2/health/ready") {
		t.Errorf("HEALTHCHECK %q: want one on /v2/health/ready", health)
	}
	licences := false
	for _, in := range last {
		licences = licences || in.cmd == "COPY" && strings.Contains(in.args, "LICENSE") && strings.Contains(in.args, "THIRD_PARTY_NOTICES")
	}
	if !licences {
		t.Errorf("the final stage does not copy LICENSE and THIRD_PARTY_NOTICES into the image")
	}
	sbom := false
	for _, in := range last {
		sbom = sbom || in.cmd == "COPY" && strings.Contains(in.args, ".cdx.json")
	}
	if !sbom {
		t.Errorf("the final stage does not copy the SBOM (scripts/sbom.sh) into the image")
	}
	var build string
	for _, in := range ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
		// The repository's .cache (a relative path); /root/.cache in a
		// cache mount is the build container's own.
		if (in.cmd == "COPY" || in.cmd == "RUN") && !strings.Contains(in.args, "from=") && repoCache.MatchString(in.args) {
			t.Errorf("%s %s: .cache is not in the build context (.dockerignore): take it from a named context", in.cmd, in.args)
		}
	}
	if !strings.Contains(build, "-X github.com/edgeai/edge-node/internal/buildinfo.version=") {
		t.Errorf("go build %q does not stamp internal/buildinfo.version", build)
	}
	if !strings.Contains(comments, "CPU ONLY") {
		t.Errorf("the Dockerfile's comments do not say the image is CPU only")
	}

	b, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatalf(".dockerignore at the repository root: %v", err)
	}
	ignored := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			ignored[strings.Trim(l, "/")] = true
		}
	}
	for _, want := range []string{".git", ".cache", "bin", "dist"} {
		if !ignored[want] {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "The container image is CPU only") {
		t.Errorf("README.md does not say the container image is CPU only")
	}
}

// TestDecodeStrictBad is the table of bad manifests.
func TestDecodeStrictBad(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"empty", ``},
		{"not a mapping", `- a`},
		{"wrong kind", "apiVersion: devices.kubeedge.io/v1beta1\nkind: DeviceModel\n"},
		{"wrong version", "apiVersion: devices.kubeedge.io/v1alpha2\nkind: Device\n"},
		{"unknown field", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {colour: red}\n"},
		{"duplicate field", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {nodeName: a, nodeName: b}\n"},
		{"wrong type", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {properties: {name: x}}\n"},
		{"desired value as number", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {properties: [{name: m.version, desired: {value: 2}}]}\n"},
		{"tab indentation", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec:\n\tnodeName: a\n"},
		{"too large", "apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\n#" + strings.Repeat("x", maxManifest)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d devices.Device
			if err := decodeStrict([]byte(tc.doc), "devices.kubeedge.io/v1beta1", "Device", &d); err == nil {
				t.Fatalf("accepted %.60q", tc.doc)
			}
		})
	}
}

// FuzzDecodeDevice: no panic, and a Device that decodes gives property
// values the schema decoder handles.
func FuzzDecodeDevice(f *testing.F) {
	if b, err := os.ReadFile("device.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("apiVersion: devices.kubeedge.io/v1beta1\nkind: Device\nspec: {properties: [{name: m.version, desired: {value: '1'}}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d devices.Device
		if decodeStrict(b, "devices.kubeedge.io/v1beta1", "Device", &d) != nil {
			return
		}
		var props []kubeedge.Property
		for _, p := range d.Spec.Properties {
			props = append(props, kubeedge.Property{Name: p.Name, Value: p.Desired.Value})
		}
		kubeedge.ParseDesired(props)
	})
}
