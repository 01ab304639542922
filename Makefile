# tokenwarden: a Kubernetes-native token issuer.
#
# Every tool comes from the Go module proxy: hack/control-plane.sh builds kube-apiserver, etcd,
# controller-gen and helm once into a cache folder keyed by version, and prints that folder.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# Each recipe asks the script for the folder, so that a failed build stops the recipe.
TOOLS = tools=$$(hack/control-plane.sh)
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRDs and RBAC from the Go markers, and copy both into the Helm chart.
	@$(TOOLS); \
	$$tools/controller-gen crd paths="./api/..." output:crd:artifacts:config=config/crd/bases; \
	$$tools/controller-gen rbac:roleName=tokenwarden-controller paths="./controllers/..." output:rbac:artifacts:config=config/rbac; \
	mkdir -p charts/tokenwarden/crds && rm -f charts/tokenwarden/crds/*.yaml && cp config/crd/bases/*.yaml charts/tokenwarden/crds/ && \
	cp config/rbac/role.yaml charts/tokenwarden/files/controller-clusterrole.yaml

.PHONY: generate
generate: ## Generate the deepcopy functions of the API types.
	@$(TOOLS); $$tools/controller-gen object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify
verify: manifests generate ## Regenerate everything generated and fail if anything differs from what is committed.
	@if ! git diff --quiet -- api config charts || [ -n "$$(git status --porcelain --untracked-files=all -- api config charts)" ]; then \
		echo "Generated files are out of date; run 'make manifests generate' and commit:"; \
		git status --short -- api config charts; git --no-pager diff --stat -- api config charts; exit 1; \
	fi

.PHONY: lint
lint: ## go vet and gofmt.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: test
test: verify lint ## Run every test against a real kube-apiserver and etcd (built once, then cached) and headless Chromium (installed with apt-get when missing), after a short fuzz of every target.
	FUZZTIME=$(TEST_FUZZTIME) FUZZ_KEEP_CORPUS=0 hack/fuzz.sh
	@$(TOOLS); chromium=$$(hack/chromium.sh); set -x; KUBEBUILDER_ASSETS=$$tools CHROMIUM=$$chromium go test $(GO_TEST_FLAGS) ./...

TEST_FUZZTIME ?= 5s
FUZZTIME ?= 1m
.PHONY: fuzz
fuzz: ## Fuzz every target for FUZZTIME (default 1m) and keep what the fuzzer found in testdata/fuzz.
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

##@ Run

RUN_ARGS ?=
.PHONY: run
run: ## Run the whole product on a local control plane (no cluster, no Docker); Ctrl-C stops it. RUN_ARGS="--clean" starts afresh.
	@$(TOOLS); CGO_ENABLED=0 go build -o bin/tokenwarden-dev ./cmd/tokenwarden-dev && exec bin/tokenwarden-dev dev --control-plane "$$tools" $(RUN_ARGS)

BENCH_ARGS ?=
.PHONY: bench
bench: ## Run the load tool: every scenario for 5s on loopback, then a Markdown table (BENCH_ARGS="--full --profile prof").
	@$(TOOLS); CGO_ENABLED=0 go build -o bin/ ./cmd/tokenwarden ./cmd/tokenwarden-dev && exec bin/tokenwarden-dev bench --control-plane "$$tools" $(BENCH_ARGS)

##@ Build

.PHONY: build
build: ## Build the binaries into bin/: tokenwarden (the image's), tokenwarden-dev (make run, make bench), kubectl-tokenwarden.
	CGO_ENABLED=0 go build -trimpath -o bin/ ./cmd/...
