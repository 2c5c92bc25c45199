# Switchyard's two entry points are `make test` (everything CI runs) and, once it
# exists, `make demo`. Both install or build what they need and cache it outside the
# repository (~/.cache/switchyard and Go's module cache), so only the first run pays.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# Two cores: keep cargo and the test harness from oversubscribing them.
export CARGO_BUILD_JOBS ?= 2
export CARGO_TERM_COLOR ?= never
# Incremental caches doubled the suite's target directory (3.2 GB beside 3.3 GB of test
# binaries) and a full disk failed a CI run; a clean build gains nothing from them.
# Plain `cargo` keeps them for local work.
export CARGO_INCREMENTAL ?= 0
export KUBE_VERSION ?= v1.37.2
GATEWAY_API_VERSION ?= v1.6.3

CHAOS_FAULTS ?= 200

.PHONY: chaos bench test deps kube-apiserver kubectl gateway-api-crds monitoring-tools fmt-check clippy unit integration crds helm traefik demo

## test: install what is missing, then fmt check, clippy, unit and integration tests.
test: deps fmt-check clippy unit integration

## demo: the CRM unification example (examples/crm-unification, six cohorts) migrated end to
## end in about two minutes: an embedded control plane (or the cluster of $KUBECONFIG, see
## demo/README.md), a synthetic metrics source, a real Prometheus and Alertmanager, and the
## operator. ARGS goes to the demo, e.g. make demo ARGS=--ci or ARGS="--time-scale 86400".
demo:
	@echo "make demo: builds switchyard and switchyard-demo, then migrates examples/crm-unification (six cohorts)"
	@echo "on an embedded control plane (or the cluster of \$$KUBECONFIG if it answers; ARGS=--embedded to stay local)"
	@echo "with a synthetic metrics source, Prometheus, Alertmanager and the operator."
	@echo "About 2 minutes once built (the first kube-apiserver build adds about 5, cached after). Ctrl-C stops it and cleans up."
	@$(MAKE) --no-print-directory kube-apiserver gateway-api-crds monitoring-tools traefik
	cargo build --locked --bins -p switchyard -p switchyard-demo
	"$${CARGO_TARGET_DIR:-target}/debug/switchyard-demo" $(ARGS)

## deps: the toolchain checks, a cached kube-apiserver and kubectl, the Gateway API module,
## Prometheus and Alertmanager, Helm, Traefik and iproute2.
deps: kube-apiserver kubectl gateway-api-crds monitoring-tools helm traefik
	@command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
	@cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

kube-apiserver:
	@if [ -n "$${KUBE_APISERVER:-}" ]; then echo "using KUBE_APISERVER=$$KUBE_APISERVER"; \
	else echo "kube-apiserver: $$(hack/build-kube.sh kube-apiserver)"; fi

## kubectl: a cached kubectl of the same Kubernetes version (KUBECTL overrides it), for the
## test that reads the CRDs' descriptions through `kubectl explain` (tests/explain.rs).
kubectl:
	@if [ -n "$${KUBECTL:-}" ]; then echo "using KUBECTL=$$KUBECTL"; \
	else echo "kubectl: $$(hack/build-kube.sh kubectl)"; fi

## helm: a cached Helm (built from the helm.sh/helm/v3 Go module; HELM overrides it) and
## the prometheus-operator module, whose ServiceMonitor and PrometheusRule CRDs
## tests/helm.rs installs before applying the chart.
helm:
	@helm=$$(hack/build-helm.sh); echo "helm: $$helm"
	@cd /tmp && go mod download github.com/prometheus-operator/prometheus-operator@v0.85.0

## traefik: a cached Traefik v3.6.12 (built from its Go module by hack/build-traefik.sh;
## TRAEFIK overrides it) for the data-plane tests (tests/data_plane.rs), and iproute2's
## `ip`, which they use to put the backends in a network namespace.
traefik:
	@traefik=$$(hack/build-traefik.sh); echo "traefik: $$traefik"
	@if ! command -v ip >/dev/null; then \
		if [ "$$(id -u)" -eq 0 ]; then sudo=; \
		elif command -v sudo >/dev/null; then sudo=sudo; \
		else echo "install the Debian package iproute2 as root"; exit 1; fi; \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2; \
	fi

gateway-api-crds:
	@cd /tmp && go mod download sigs.k8s.io/gateway-api@$(GATEWAY_API_VERSION)

## monitoring-tools: Prometheus and Alertmanager from Debian, for the monitoring tests
## (PROMETHEUS and ALERTMANAGER override the binaries' paths in the tests).
monitoring-tools:
	@if ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null; then \
		if [ "$$(id -u)" -eq 0 ]; then sudo=; \
		elif command -v sudo >/dev/null; then sudo=sudo; \
		else echo "install the Debian packages prometheus and prometheus-alertmanager as root"; exit 1; fi; \
		$$sudo apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus prometheus-alertmanager; \
	fi

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

## unit: pure tests, no control plane.
unit:
	cargo test --workspace --locked --lib --bins
	cargo test --locked --test crds

## integration: tests against a real kube-apiserver and etcd (every binary runs, so one
## failure does not hide the next).
integration:
	cargo test --workspace --locked --no-fail-fast --tests

## chaos: the long form of the chaos suite (tests/chaos.rs; its short form, 30 faults,
## runs in `make test`): CHAOS_FAULTS faults (200) at random times from SEED (random when
## unset; the run prints it first as `chaos seed=N`), e.g. make chaos SEED=42.
chaos: deps
	SWITCHYARD_CHAOS_FAULTS=$(CHAOS_FAULTS) $(if $(SEED),SWITCHYARD_CHAOS_SEED=$(SEED)) \
		cargo test --locked --test chaos -- --nocapture

## bench: the benchmarks (print figures; they assert nothing about time).
bench: deps
	cargo bench --locked --bench alert_to_route
	cargo bench --locked --bench scale

## crds: regenerate crds/ from the Rust types, and policies/ from src/policies.rs; then
## copy both, with policies/rbac.yaml, into the Helm chart (tests/helm.rs checks the copies).
crds:
	cargo run --quiet --locked -- crds --out-dir crds
	cargo run --quiet --locked -- policies > policies/actions.yaml
	rm -f charts/switchyard/crds/*.yaml
	cp crds/*.yaml charts/switchyard/crds/
	cp policies/actions.yaml policies/rbac.yaml charts/switchyard/files/policies/
