# hookit — the two quick-start commands are `make demo` and `make test`.
SWIFT ?= swift

.PHONY: deps build targets demo test bench bench-peers clean

deps:
	@bash scripts/install-deps.sh

build: deps
	$(SWIFT) build

targets: deps
	$(MAKE) -s -C testtargets

demo: build targets
	@bash scripts/demo.sh

test: deps targets
	$(SWIFT) build
	$(SWIFT) test --disable-swift-testing

# Benchmarks: release build, one table printed and written to bench/RESULTS.md with a plot.
bench: deps targets
	$(SWIFT) build -c release
	python3 bench/bench.py

bench-peers: deps targets
	bash scripts/install-peers.sh
	$(SWIFT) build -c release
	PY=.venv-peers/bin/python; [ -x $$PY ] || PY=python3; $$PY bench/bench.py --peers

clean:
	$(MAKE) -C testtargets clean
	rm -rf .build
