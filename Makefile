# hookit — the two quick-start commands are `make demo` and `make test`.
SWIFT ?= swift

.PHONY: deps build targets demo test clean

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

clean:
	$(MAKE) -C testtargets clean
	rm -rf .build
