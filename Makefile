# Edge inference node. `make help` lists the targets.
SHELL := /bin/bash
CACHE ?= $(CURDIR)/.cache
ORT_LIB ?= $(CACHE)/libonnxruntime.so
MODELS ?= $(CACHE)/models
HTTP_ADDR ?= 127.0.0.1:8080
GO ?= go
# The version stamped into the binaries (internal/buildinfo): --version, GET /v2, build_info, DMI.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/edgeai/edge-node/internal/buildinfo.version=$(VERSION)
FUZZTIME ?= 15s
export ONNXRUNTIME_LIB := $(ORT_LIB)
export EDGE_MODELS_DIR := $(MODELS)
# Broker and browser tests fail, not skip, when mosquitto or chromium is
# missing (deps installs them).
export EDGE_REQUIRE_BROKER := 1
# The ModelVersion controller's tests run a real etcd and kube-apiserver
# (scripts/kube-assets.sh puts both here) and fail, not skip, without them.
K8S_VERSION ?= 1.31.4
export KUBEBUILDER_ASSETS := $(CACHE)/k8s/v$(K8S_VERSION)
export EDGE_REQUIRE_KUBE := 1
export EDGE_REQUIRE_BROWSER := 1
# The one-tensor fine-tune test makes its v2 with Debian's python3-onnx
# (deps installs it) and fails, not skips, without it.
export EDGE_REQUIRE_PYONNX := 1

.PHONY: help setup deps build run test edgectl-cross test-race test-fleet-scale test-kube-scale bench fuzz lint

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: ## fetch ONNX Runtime and the sample models into .cache (sha256-pinned), once
	@scripts/setup.sh

deps: setup ## setup, plus the test-only Debian packages (mosquitto, etcd, arm64 cross gcc, qemu-user, debootstrap, rpm, buildah) when missing, and kube-apiserver (built once into .cache)
	@scripts/test-deps.sh
	@K8S_VERSION=$(K8S_VERSION) CACHE=$(CACHE) GO=$(GO) scripts/kube-assets.sh

build: ## build bin/edge-node, bin/edgectl and bin/edge-controller
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

run: setup build ## serve the sample models on $(HTTP_ADDR) (embedded broker when none is configured; more flags in NODE_FLAGS)
	bin/edge-node --http-addr $(HTTP_ADDR) --model-repository $(MODELS) --ort-lib $(ORT_LIB) --data-dir $(CACHE)/data $(NODE_FLAGS)

test: deps ## lint (gofmt, vet, deadcode), every test, the race detector, cgocheck2, the no-cgo build, both archives on glibc 2.31, the .deb and .rpm installed, signed checksums, the container image built and run
	$(MAKE) --no-print-directory lint
	$(GO) test -count=1 -timeout 15m ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	GOEXPERIMENT=cgocheck2 $(GO) test -count=1 ./cgo/... ./node/...
	CGO_ENABLED=0 $(GO) vet ./cgo/... && CGO_ENABLED=0 $(GO) test -count=1 ./cgo/...
	$(MAKE) --no-print-directory edgectl-cross
	$(MAKE) --no-print-directory dist-test package-test sign-test image-test

edgectl-cross: ## build edgectl with CGO_ENABLED=0 for linux, darwin and windows, amd64 and arm64 (run by make test)
	@for os in linux darwin windows; do for arch in amd64 arm64; do \
		echo "edgectl $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -o /dev/null ./cmd/edgectl || exit 1; \
	done; done

test-race: deps ## every test under the race detector only
	$(GO) test -race -count=1 -timeout 20m ./...

test-fleet-scale: deps ## fleet rollouts with 1,000 and 5,000 simulated nodes on mosquitto, then 1,000 and 3,000 that download a 0.6 MB version from the broker for real (figures in the log)
	EDGE_FLEET_SCALE=1 EDGE_FLEET_NODES=1000 $(GO) test -count=1 -timeout 600s -run TestRollout -v ./sync/rollout
	EDGE_FLEET_SCALE=1 EDGE_FLEET_NODES=5000 $(GO) test -count=1 -timeout 600s -run TestRollout -v ./sync/rollout
	EDGE_FLEET_SCALE=1 EDGE_FLEET_DOWNLOAD=real EDGE_FLEET_NODES=1000,3000 $(GO) test -count=1 -timeout 900s -run TestRolloutScale -v ./sync/rollout

test-kube-scale: deps ## a ModelVersion on EDGE_KUBE_SCALE (default 1000) simulated nodes: time to first publish and to Active, controller CPU and memory (figures in the log)
	EDGE_KUBE_SCALE=$${EDGE_KUBE_SCALE:-1000} $(GO) test -count=1 -timeout 900s -run TestMeasureScale -v ./cmd/edge-controller

bench: deps ## the measurements of docs/performance.md, in one run, into bench.txt
	@scripts/bench.sh

fuzz: deps ## each fuzz target for $(FUZZTIME)
	@scripts/fuzz-all.sh $(FUZZTIME)

lint: ## gofmt, go vet, and deadcode (no function only tests reach outside test helpers: scripts/deadcode.sh)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@GO=$(GO) scripts/deadcode.sh

.PHONY: dist dist-test package package-test sign sign-test image-test

dist: setup ## release archives for linux/amd64 and linux/arm64 in dist/, linked against a glibc 2.31 sysroot (cross gcc: gcc-aarch64-linux-gnu)
	@scripts/dist.sh

dist-test: dist ## check the glibc floor and run both archives on glibc 2.31 (arm64 under qemu-user): --version and one silero_vad inference
	@scripts/dist-test.sh

package: dist ## .deb and .rpm for amd64 and arm64 in dist/ with nfpm (deploy/packaging/nfpm.yaml)
	@scripts/package.sh

package-test: package ## install the amd64 .deb (dpkg) and .rpm (rpm --root) into a debootstrap'd Debian root, serve one inference, remove
	@$(if $(filter 0,$(shell id -u)),,sudo) EDGE_CACHE_DIR=$(CACHE) scripts/package-test.sh

sign: package ## sign dist/SHA256SUMS with the OpenSSH ed25519 key RELEASE_KEY (dist/SHA256SUMS.sig; scripts/verify-release.sh checks it)
	@test -n "$(RELEASE_KEY)" || { echo "make sign: set RELEASE_KEY to the release's OpenSSH private key" >&2; exit 1; }
	@scripts/sign.sh "$(RELEASE_KEY)"

sign-test: package ## sign dist/ with a throwaway key and check that verify-release.sh accepts it and refuses a changed file, a changed SHA256SUMS, another key and no signature
	@scripts/sign-test.sh

image-test: setup ## build deploy/kubeedge/Dockerfile (linux/amd64) with buildah against locally made bases, check its user, HEALTHCHECK, notices and SBOM, serve one inference from it
	@$(if $(filter 0,$(shell id -u)),,sudo) EDGE_CACHE_DIR=$(CACHE) GO=$$(command -v $(GO)) scripts/image-test.sh

.PHONY: generate generate-docs generate-notices generate-crd

generate-crd: ## regenerate the ModelVersion deepcopy code and deploy/kubernetes/crd/ with controller-gen
	GOFLAGS=-mod=mod $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.16.5 object paths=./sync/kube/api/... crd output:crd:artifacts:config=deploy/kubernetes/crd

generate-docs: ## regenerate docs/config.md and deploy/config.example.yaml from node.Config (a test checks they match)
	$(GO) test -count=1 -run '^TestConfigReference$$' ./cmd/edge-node -update

generate-notices: ## regenerate THIRD_PARTY_NOTICES from the module graph of cmd/edge-node, cmd/edgectl and cmd/edge-controller (a test checks it matches)
	$(GO) test -count=1 -run '^TestThirdPartyNotices$$' . -update

generate: ## regenerate the committed protobuf code (Triton's gRPC service) with protoc and the go.mod-pinned plugins
	@GO=$(GO) scripts/generate.sh
