package kubeedgetest

import (
	"context"
	"net"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"google.golang.org/grpc"
)

// EdgeCore stands in for KubeEdge's EdgeCore: a DeviceManagerService built
// from kubeedge/api's generated code, on a unix socket. It answers
// MapperRegister with the devices it holds and records every report.
type EdgeCore struct {
	dmiapi.UnimplementedDeviceManagerServiceServer

	devices []*dmiapi.Device
	// Reports receives every ReportDeviceStatus request (buffered; a test
	// that stops reading makes the mapper's reports wait).
	Reports chan *dmiapi.ReportDeviceStatusRequest

	mu         sync.Mutex
	registered []*dmiapi.MapperRegisterRequest
}

// MapperRegister implements DeviceManagerServiceServer.
func (e *EdgeCore) MapperRegister(_ context.Context, req *dmiapi.MapperRegisterRequest) (*dmiapi.MapperRegisterResponse, error) {
	e.mu.Lock()
	e.registered = append(e.registered, req)
	e.mu.Unlock()
	return &dmiapi.MapperRegisterResponse{DeviceList: e.devices}, nil
}

// ReportDeviceStatus implements DeviceManagerServiceServer.
func (e *EdgeCore) ReportDeviceStatus(ctx context.Context, req *dmiapi.ReportDeviceStatusRequest) (*dmiapi.ReportDeviceStatusResponse, error) {
	select {
	case e.Reports <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &dmiapi.ReportDeviceStatusResponse{}, nil
}

// Registered returns the MapperRegister requests received so far.
func (e *EdgeCore) Registered() []*dmiapi.MapperRegisterRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*dmiapi.MapperRegisterRequest(nil), e.registered...)
}

// ShortTempDir returns a temporary folder with a short path: unix socket
// paths are limited to 107 bytes and t.TempDir() can be longer.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ke")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// StartEdgeCore serves an EdgeCore on sock holding devices, until the end
// of the test.
func StartEdgeCore(t testing.TB, sock string, devices ...*dmiapi.Device) *EdgeCore {
	t.Helper()
	ec := &EdgeCore{devices: devices, Reports: make(chan *dmiapi.ReportDeviceStatusRequest, 64)}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	dmiapi.RegisterDeviceManagerServiceServer(srv, ec)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ec
}

// Device builds a Device of the node's protocol with props as desired
// values, in name order.
func Device(namespace, name string, props map[string]string) *dmiapi.Device {
	d := &dmiapi.Device{Name: name, Namespace: namespace, Spec: &dmiapi.DeviceSpec{
		DeviceModelReference: "edge-ai-node",
		Protocol:             &dmiapi.ProtocolConfig{ProtocolName: "edge-node"},
	}}
	names := make([]string, 0, len(props))
	for n := range props {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d.Spec.Properties = append(d.Spec.Properties, &dmiapi.DeviceProperty{Name: n, Desired: &dmiapi.TwinProperty{Value: props[n]}})
	}
	return d
}

// Twins returns a report's reported values by property name.
func Twins(r *dmiapi.ReportDeviceStatusRequest) map[string]string {
	out := map[string]string{}
	for _, tw := range r.GetReportedDevice().GetTwins() {
		out[tw.GetPropertyName()] = tw.GetReported().GetValue()
	}
	return out
}

// WaitReport reads reports for namespace/name until one has every value in
// want, and returns it. The deadline only stops a hung test; nothing is
// asserted about time.
func (e *EdgeCore) WaitReport(t testing.TB, namespace, name string, want map[string]string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var last map[string]string
	for {
		select {
		case r := <-e.Reports:
			if r.GetDeviceName() != name || r.GetDeviceNamespace() != namespace {
				t.Fatalf("report for %s/%s, want %s/%s", r.GetDeviceNamespace(), r.GetDeviceName(), namespace, name)
			}
			last = Twins(r)
			t.Logf("EdgeCore got a report: %v", last)
			ok := true
			for k, v := range want {
				if last[k] != v {
					ok = false
				}
			}
			if ok {
				return last
			}
		case <-ctx.Done():
			t.Fatalf("no report with %v; last report: %v", want, last)
		}
	}
}
