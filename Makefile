# Front for the CMake build. The README's two commands:
#   make demo   set up, fetch MNIST, train LeNet-5 and report test accuracy
#   make test   set up, build (plain and sanitized) and pass every test
JOBS ?= $(shell nproc)
BUILD ?= build
PREFIX ?= /usr/local
FUZZ_SECONDS ?= 20

.PHONY: all deps build build-asan test test-plain test-asan demo bench fuzz install clean mnist golden
.PHONY: check-models onnx-reports

all: build

deps:
	@scripts/install-deps

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null

build: deps $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DOSP_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)

mnist: deps
	scripts/fetch-mnist

test-plain: build mnist
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Slow tests (long training, large golden nets) run only in the plain build.
test-asan: build-asan mnist
	scripts/ctest-sanitized build-asan $(JOBS)

# The fuzz targets get a shorter run here than in 'make fuzz', to keep the
# whole gate within its time.
test: test-plain test-asan
	$(MAKE) fuzz FUZZ_SECONDS=8

demo: build mnist
	scripts/demo

bench: build
	scripts/install-deps --bench
	bench/run-all

# Each fuzz target runs for FUZZ_SECONDS on its seed corpus.
fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DOSP_FUZZ=ON -DOSP_TESTS=OFF >/dev/null
	cmake --build build-fuzz -j $(JOBS)
	scripts/run-fuzz build-fuzz $(FUZZ_SECONDS)

# The ONNX golden test at full size: torchvision's resnet18, mobilenet_v2,
# squeezenet1_1 and vgg11 at 224x224 against PyTorch (about 2 GB of disk).
golden: build
	/usr/bin/python3 tests/golden/make_onnx_golden.py $(BUILD)/onnx_golden_full --full
	cd $(BUILD) && OSP_SOURCE_DIR=$(CURDIR) OSP_ONNX_GOLDEN=$(CURDIR)/$(BUILD)/onnx_golden_full \
		bash $(CURDIR)/tests/cli/onnx_import.sh $(CURDIR)/$(BUILD)/osprey

# torchvision's classification models through 'osprey import' at opsets 11,
# 13 and 17 (outside 'make test': too slow for 2 cores); fails on a wrong
# answer or a crash. The table goes to $(BUILD)/torchvision-models.md.
check-models: build
	/usr/bin/python3 tests/onnx/torchvision_models.py $(BUILD)/osprey --report $(BUILD)/torchvision-models.md

# The two ONNX reports docs/ keeps, written again: ONNX's conformance suite
# (docs/onnx-conformance.md) and torchvision's models at opsets 11 to 18
# (docs/onnx-torchvision.md). A report is written even when its run fails.
onnx-reports: build
	-/usr/bin/python3 tests/onnx/conformance.py $(BUILD)/osprey --report docs/onnx-conformance.md
	-/usr/bin/python3 tests/onnx/torchvision_models.py $(BUILD)/osprey --opsets 11,13,17,18 \
		--report docs/onnx-torchvision.md

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
