# tally — build, test, demo, benchmarks, protobuf generation.
# Go modules download by themselves; the tools below are installed into
# ./bin by `go install` at pinned versions, so nothing else is needed.

GO      ?= go
BIN     := $(CURDIR)/bin
TALLY   := $(BIN)/tally
export PATH := $(BIN):$(PATH)

BUF_VERSION            := v1.50.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION := v1.5.1

.PHONY: all build test test-long fmt-check vet demo bench proto tools fuzz clean promtool test-metrics chromium test-dashboard chart chart-tools

all: build

build:
	$(GO) build -o $(TALLY) ./cmd/tally

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$'); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The race detector is part of the test run, always.
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 60m ./...

# Process-level tests too long for every run call longtest.Gate (package
# internal/longtest) and skip in `make test`, saying so; they run here and CI
# runs this target after `make test`. LONG_TESTS names every gated test
# (internal/longtest's TestEveryGateIsRun fails when one is missing). No race
# detector here: the same code runs under it at a smaller size in make test
# (TestEdgesMatchFlat), and 300 clients under it would take most of CI.
LONG_TESTS := ^(TestEdgesMatchFlat300|TestDemoAcceptance)$$
test-long:
	TALLY_LONG_TESTS=1 $(GO) test -count=1 -timeout 60m -run '$(LONG_TESTS)' -v ./...

# promtool checks the /metrics text in the telemetry tests; it comes with
# Debian's prometheus package (the tests skip that check without it).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 || { echo "promtool missing and no apt-get: install Prometheus's promtool"; exit 1; }; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends prometheus; }
	promtool --version | head -1

# The tests that scrape /metrics after a simulated job, with promtool.
test-metrics: promtool
	$(GO) test -race -count=1 -run 'TestEndpoint|TestMetricsAfterRounds' -v ./internal/telemetry/ ./coordinator/

# chromium drives the dashboard's pages in the browser tests (Debian's
# chromium package); they skip without it, except under CI=true.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 || { echo "chromium missing and no apt-get: install Chromium"; exit 1; }; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends chromium; }
	chromium --version

# The dashboard's tests, the browser ones included; screenshots of every
# page go to out/artefacts/dashboard.
test-dashboard: chromium
	TALLY_ARTEFACTS=$(CURDIR)/out/artefacts CI=true $(GO) test -race -count=1 -v -run 'TestDashboard' ./cmd/tally/
	$(GO) test -race -count=1 ./internal/dashboard/

# The main job on embedded sample data, in two parts. First, training:
# breast-cancer, 8 clients, 20 rounds under secure aggregation, compared with
# the same model trained centrally on the union of the clients' data (what
# federation costs). Then accounting: the same job with client 6 flipping
# half its labels and client 7 a free rider, valued every round and paid
# with signed receipts, which are verified offline.
DEMO_FLAGS := --dataset breast-cancer --clients 8 --rounds 20 --seed 1
demo: build
	rm -rf out/demo.db out/receipts
	$(TALLY) simulate $(DEMO_FLAGS) --report out/demo-training-report.json
	$(TALLY) simulate $(DEMO_FLAGS) --corrupt 6=label-flip:0.5 --corrupt 7=free-rider:random \
		--db out/demo.db --receipts-dir out/receipts --report out/demo-report.json
	$(TALLY) ledger verify --db out/demo.db

# Benchmarks, written to BENCHMARKS.md with the machine and the date.
bench:
	./scripts/bench.sh BENCHMARKS.md

tools:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)

proto: tools
	cd proto && $(BIN)/buf lint && $(BIN)/buf generate

# The Kubernetes deployment (deploy/), checked offline: helm lint, helm
# template with the defaults and with every option on (edges included,
# with and without their autoscaler; values.schema.json must refuse a
# badly typed value), each rendered object
# decoded strictly into its Kubernetes API type (deploy/validate), and the
# Dockerfile's shape and its build command's output, a static binary (no
# container daemon here, so the image itself is not built), which then runs
# the rendered pods' command lines as local processes (TestRehearse: the
# demo job completes and its ledger verifies; TestRehearseEdge: the same
# with edge.enabled=true, the demo clients joining through the edge pod). Helm and the
# Kubernetes modules are pinned in deploy/tools and deploy/validate, their
# own modules, so the main go.mod has none of them.
CHART := deploy/helm/tally
# Mutual TLS for the rehearsals: the clients' CA and the demo clients' one
# certificate, the Secrets TestRehearseMTLS creates.
MTLS  := --set tls.clientCASecret=tally-client-ca --set clients.tlsClientSecret=tally-clients-tls

chart-tools:
	cd deploy/tools && GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm

chart: chart-tools
	$(BIN)/helm lint --strict $(CHART)
	$(BIN)/helm lint --strict $(CHART) --values $(CHART)/ci/all-on-values.yaml
	mkdir -p out/chart
	$(BIN)/helm template tally $(CHART) > out/chart/default.yaml
	$(BIN)/helm template tally $(CHART) --values $(CHART)/ci/all-on-values.yaml > out/chart/all-on.yaml
	$(BIN)/helm template tally $(CHART) --set clients.enabled=true > out/chart/rehearse.yaml
	$(BIN)/helm template tally $(CHART) --set clients.enabled=true --set edge.enabled=true --set edge.tlsSecret=tally-edge-tls > out/chart/rehearse-edge.yaml
	$(BIN)/helm template tally $(CHART) --set edge.enabled=true --set edge.autoscaling.enabled=false > out/chart/edge-fixed.yaml
	$(BIN)/helm template tally $(CHART) --set clients.enabled=true $(MTLS) > out/chart/rehearse-mtls.yaml
	$(BIN)/helm template tally $(CHART) --set clients.enabled=true --set edge.enabled=true --set edge.tlsSecret=tally-edge-tls $(MTLS) \
		--set edge.tlsClientSecret=tally-edge-client-tls > out/chart/rehearse-edge-mtls.yaml
	@if $(BIN)/helm template tally $(CHART) --set coordinator.port=grpc >/dev/null 2>out/chart/schema.err; then \
		echo "coordinator.port=grpc rendered; values.schema.json must refuse it"; exit 1; fi; \
	grep -q "/coordinator/port" out/chart/schema.err && echo "coordinator.port=grpc refused by values.schema.json, as it must be"
	@if $(BIN)/helm template tally $(CHART) --values $(CHART)/ci/all-on-values.yaml --set edge.tlsClientSecret= >/dev/null 2>out/chart/schema-edge.err; then \
		echo "edges under mutual TLS without edge.tlsClientSecret rendered; values.schema.json must refuse it"; exit 1; fi; \
	grep -q "/edge/tlsClientSecret" out/chart/schema-edge.err && echo "edges under mutual TLS without edge.tlsClientSecret refused by values.schema.json, as it must be"
	@if $(BIN)/helm template tally $(CHART) --values $(CHART)/ci/all-on-values.yaml --set clients.tlsClientSecret= >/dev/null 2>out/chart/schema-clients.err; then \
		echo "demo clients under mutual TLS without clients.tlsClientSecret rendered; values.schema.json must refuse it"; exit 1; fi; \
	grep -q "/clients/tlsClientSecret" out/chart/schema-clients.err && echo "demo clients under mutual TLS without clients.tlsClientSecret refused by values.schema.json, as it must be"
	cd deploy/validate && $(GO) vet ./... && $(GO) test -count=1 ./... && $(GO) run . $(CURDIR)/out/chart/default.yaml $(CURDIR)/out/chart/all-on.yaml $(CURDIR)/out/chart/edge-fixed.yaml $(CURDIR)/out/chart/rehearse-edge.yaml \
		$(CURDIR)/out/chart/rehearse-mtls.yaml $(CURDIR)/out/chart/rehearse-edge-mtls.yaml
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/tally-static ./cmd/tally
	cd deploy/validate && TALLY_STATIC_BINARY=$(BIN)/tally-static TALLY_BINARY=$(BIN)/tally-static TALLY_REHEARSE=$(CURDIR)/out/chart/rehearse.yaml \
		TALLY_REHEARSE_EDGE=$(CURDIR)/out/chart/rehearse-edge.yaml \
		TALLY_REHEARSE_MTLS=$(CURDIR)/out/chart/rehearse-mtls.yaml TALLY_REHEARSE_EDGE_MTLS=$(CURDIR)/out/chart/rehearse-edge-mtls.yaml \
		$(GO) test -count=1 -timeout 30m -run 'TestStaticBinary|TestDockerfileShape|TestRehearse' ./...

# Each fuzz target runs for FUZZTIME (default 60s).
FUZZTIME ?= 60s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf $(BIN) out

# Valuation experiments (issue 6): every scenario under experiments/scenarios,
# every method in every privacy mode, in process; tables, plots and the
# machine and date into experiments/results (6 to 8.5 minutes measured on 2 cores, the longer on a shared machine).
.PHONY: experiments
experiments: build
	rm -rf experiments/results/plots
	$(TALLY) experiment run experiments/scenarios/*.yaml --out experiments/results

# Reconstruction attacks (issue 21): what a coordinator can rebuild from
# each release (a plaintext update, sums of k, group sums, influence and
# projection scalars), beside random guessing; table, CSV and pictures with the
# machine and date into audit/results. The bring-your-own-model CNN
# (examples/pytorch/digits_cnn.py) is attacked with PyTorch
# (audit/cnn_attack.py): Debian's python3-torch, installed here when
# missing; without it and without apt-get, make audit fails and says so.
.PHONY: audit torch
audit: build torch
	$(TALLY) audit --out audit/results

torch:
	@$${TALLY_PYTHON:-/usr/bin/python3} -c 'import torch, numpy' >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null 2>&1 || { echo "PyTorch missing (the audit's CNN needs it) and no apt-get: install python3-torch and python3-numpy, or run tally audit --models logreg,mlp"; exit 1; }; \
		echo "PyTorch missing: installing Debian's python3-torch and python3-numpy for the audit's CNN"; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends python3-torch python3-numpy; }
	@$${TALLY_PYTHON:-/usr/bin/python3} -c 'import torch; print("torch", torch.__version__)'

# What three real jobs released, attacked (issue 21): the demo's second job
# (breast-cancer, 8 clients, a label flipper and a random free rider),
# digits with the MLP (10 clients, 20 rounds), and the demo's second job
# again in the projection valuation mode (6 scalars per client and round),
# each run under he with a release log and audited against its decryption
# transcript; audit/results/job-demo.md, job-digits.md, job-projection.md.
.PHONY: audit-job
AUDIT_JOB_DIR := out/audit-job
audit-job: build
	rm -rf $(AUDIT_JOB_DIR) && mkdir -p $(AUDIT_JOB_DIR)
	$(TALLY) simulate $(DEMO_FLAGS) --corrupt 6=label-flip:0.5 --corrupt 7=free-rider:random --quiet \
		--db $(AUDIT_JOB_DIR)/demo.db --release-log $(AUDIT_JOB_DIR)/demo.releases
	$(TALLY) audit job --release-log $(AUDIT_JOB_DIR)/demo.releases --state $(AUDIT_JOB_DIR)/demo.db --report audit/results/job-demo.md >/dev/null
	$(TALLY) simulate --dataset digits --model mlp --clients 10 --rounds 20 --seed 1 --centralised=false --quiet \
		--db $(AUDIT_JOB_DIR)/digits.db --release-log $(AUDIT_JOB_DIR)/digits.releases
	$(TALLY) audit job --release-log $(AUDIT_JOB_DIR)/digits.releases --state $(AUDIT_JOB_DIR)/digits.db --report audit/results/job-digits.md >/dev/null
	$(TALLY) simulate $(DEMO_FLAGS) --corrupt 6=label-flip:0.5 --corrupt 7=free-rider:random --valuation-mode projection --quiet \
		--db $(AUDIT_JOB_DIR)/projection.db --release-log $(AUDIT_JOB_DIR)/projection.releases
	$(TALLY) audit job --release-log $(AUDIT_JOB_DIR)/projection.releases --state $(AUDIT_JOB_DIR)/projection.db --report audit/results/job-projection.md >/dev/null

# What differential privacy costs (issue 21): test accuracy and the Spearman
# ρ of the clients' values against plaintext exact Shapley, without DP and at
# ε = 1, 4, 8, seeds 1 to 3, on breast-cancer with skewed sizes, a label
# flipper and a free rider; audit/results/dp-fidelity.md and .csv.
.PHONY: audit-dp
audit-dp: build
	$(TALLY) audit dp --out audit/results
