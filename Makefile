# Set-up is two commands (README.md): `make demo` and `make test`. Both create .venv when it is missing
# and reinstall when pyproject.toml changes. The venv holds the app and the engine (torch, transformers).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Outside the clone, so that CI's fresh clones and new venvs reuse downloads and built wheels.
CACHE := $(HOME)/.cache/tunedesk
WHEELS := $(CACHE)/wheels
export PIP_CACHE_DIR ?= $(CACHE)/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# The one pin, read from pyproject.toml.
LLAMA_CPP_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
LINTED := core desktop tests benchmarks
# llama.cpp's GGUF converter (convert_hf_to_gguf.py, conversion/, gguf-py/) from the sdist of the pinned
# llama-cpp-python, so that converter and runtime are one llama.cpp version; core/engine/gguf.py finds it here.
SDISTS := $(CACHE)/sdist
CONVERTER := $(VENV)/share/tunedesk/llama.cpp-$(LLAMA_CPP_VERSION)
# The engine's torch. This machine's pip takes the CPU build of 2.13.0 from local disk; a plain `torch`
# would pull a multi-GB CUDA build. On a CUDA machine: make TORCH=torch.
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench screenshots clean

demo: $(VENV)/.installed
	$(BIN)/tunedesk demo

test: $(VENV)/.installed lint
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

screenshots: $(VENV)/.installed
	$(BIN)/python docs/make_screenshots.py

bench: $(VENV)/.installed
	@for bench in benchmarks/*.py; do echo "== $$bench"; $(BIN)/python $$bench || exit 1; done

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# llama-cpp-python compiles from source (minutes on 2 cores): build its wheel once and keep it.
	@# LLAVA_BUILD=OFF skips the multimodal tools, a quarter of the build, which Tunedesk does not use.
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/pip wheel --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS)
	$(BIN)/pip install --find-links $(WHEELS) $(TORCH) -e '.[dev,engine]'
	ls $(SDISTS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz >/dev/null 2>&1 || \
		$(BIN)/pip download --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(SDISTS)
	rm -rf $(CONVERTER) && mkdir -p $(CONVERTER)
	tar -xzf $(SDISTS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(CONVERTER) --strip-components=3 \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/conversion \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/gguf-py \
		llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/LICENSE
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
