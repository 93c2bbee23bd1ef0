# Stele. `make run` starts a development server; `make test` runs every test.
# Without DATABASE_URL (run) or TEST_DATABASE_URL (test), both use a private
# PostgreSQL cluster under .stele/postgres, created and started on demand.

GO           ?= go
BIN          := bin/stele
STATICCHECK  := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOVULNCHECK  := golang.org/x/vuln/cmd/govulncheck@v1.1.4
BENCH_EVENTS ?= 20000

.PHONY: build run test bench lint fmt stop-db clean

build:
	$(GO) build -o $(BIN) ./cmd/stele

# A development server: the private PostgreSQL, the development sign-in
# (anyone can sign in as anyone: never in production) and, on an empty
# ledger, an organization owned by dev@example.com with an owner token.
run: build
	$(BIN) server --dev --dev-sign-in --bootstrap-owner dev@example.com

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

# Go benchmarks, then the ledger benchmark at 1, 16 and 64 appenders with
# its CopyFrom baseline and verification figures, the read models, the
# HTTP API and the CLI (see docs/benchmarks.md for each one's figures).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./eventstore/... ./crypto/... ./app/...
	for c in 1 16 64; do $(BIN) bench ledger --dev --events $(BENCH_EVENTS) --concurrency $$c --runs 5 --baseline --verify; done
	$(BIN) bench projections --dev
	$(BIN) bench api --dev --clients 16,64 --duration 5s
	$(BIN) bench cli --dev --runs 40

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@if $(GO) run $(GOVULNCHECK) ./... ; then :; \
	elif ! getent hosts vuln.go.dev >/dev/null; then echo "govulncheck skipped: vuln.go.dev is not reachable from here"; \
	else exit 1; fi

fmt:
	gofmt -w $$(git ls-files '*.go')

stop-db: build
	$(BIN) devdb stop

clean:
	rm -rf bin
