# Two commands on a fresh machine: `make demo` and `make test`. Everything else is here too.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | md5sum | cut -c1-8)
WEIGHTS := models/pcb_yolov8n.pt
REPO := model_repository
DETECTOR_V1 := $(REPO)/pcb_detector/1/model.onnx
ENHANCE_V1 := $(REPO)/face_restorer/1/model.onnx
export YOLO_OFFLINE := 1

.PHONY: help venv official-nets sysdeps repository triton demo test test-fast bench bench-triton bench-gateway bench-batch bench-enhance bench-line-beside bench-line bench-levers bench-overhead bench-profile bench-anomaly bench-shadow train export-tensorrt-dry-run lint clean

help:
	@echo "make demo           CPU Triton + a simulated dual-camera inspection line"
	@echo "make test           the whole test suite against real servers"
	@echo "make triton         run the CPU Triton server on $(REPO) (foreground)"
	@echo "make bench          all benchmarks -> docs/benchmarks.md"
	@echo "make train          retrain the demo detector on synthetic boards (~1 h on 2 cores)"

# One environment: serving, export and test tools. numpy < 2 everywhere (constraints.txt)
# because the python backend of the PyPI Triton server runs in it.
venv: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt -e ".[server,export,edge,dev]"
	rm -f $(VENV)/.installed-*
	touch $@

# The official GFPGAN / BasicSR networks, only for tests/test_official_arch_parity.py (export/
# re-implements them). --no-deps: their requirements would pull opencv-python, tb-nightly,
# facexlib and unpinned torch/numpy; the test imports only their arch modules, which need
# nothing beyond torch. basicsr 1.4.2 is an sdist whose setup_requires names torch:
# --no-build-isolation builds it against the venv's torch instead of downloading another one.
OFFICIAL_NETS := gfpgan==1.3.8 basicsr==1.4.2
OFFICIAL_STAMP := $(VENV)/.official-nets-$(shell echo $(OFFICIAL_NETS) | md5sum | cut -c1-8)
official-nets: $(OFFICIAL_STAMP)
$(OFFICIAL_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -c constraints.txt $(OFFICIAL_NETS)
	rm -f $(VENV)/.official-nets-*
	touch $@

# Debian packages: Chromium for the browser tests, a Korean font so the verdict labels render,
# Prometheus + promtool for the monitoring tests (rules, dashboards' queries).
SYSDEPS := chromium fonts-nanum prometheus
# the stamp names the package list, so adding a package installs it on machines set up before
SYSDEPS_STAMP := build/.sysdeps-$(shell echo $(SYSDEPS) | md5sum | cut -c1-8)
sysdeps: $(SYSDEPS_STAMP)
$(SYSDEPS_STAMP):
	@mkdir -p build
	@if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi nanum \
			|| ! command -v promtool >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q $(SYSDEPS) || \
		{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $(SYSDEPS); }; \
	fi
	touch $@

# The committed demo detector, exported as version 1 of pcb_detector (CPU layout).
repository: $(DETECTOR_V1) $(ENHANCE_V1)
$(DETECTOR_V1): $(WEIGHTS) export/detector_config.py export/onnx_target.py serving/templates/inspect_model.py | $(STAMP)
	rm -rf $(REPO)/pcb_detector $(REPO)/pcb_detector_batch $(REPO)/pcb_inspect_batch
	$(PY) -m export yolo --weights $(WEIGHTS) --target onnx --repository $(REPO)

# The enhancement networks: no weights can be downloaded here, so GFPGAN and RealESRGAN are
# exported in the narrow configuration with a fixed random init (the pipeline runs end to end;
# the faces it paints are noise). Real weights: see README "Enhancement".
$(ENHANCE_V1): | $(STAMP)
	rm -rf $(REPO)/face_restorer $(REPO)/bg_upsampler
	$(PY) -m export gfpgan --random-init --narrow --repository $(REPO)
	$(PY) -m export realesrgan --random-init --narrow --repository $(REPO)

triton: repository
	$(PY) -m serving.cpu_server --repository $(REPO)

demo: repository
	$(PY) -m demo.line --repository $(REPO)

test: venv official-nets sysdeps lint
	$(PY) -m pytest -q -rfE --durations=15

test-fast: venv official-nets
	$(PY) -m pytest -q -m "not slow"

bench: bench-triton bench-levers bench-overhead bench-gateway bench-line bench-enhance bench-batch bench-line-beside bench-anomaly bench-shadow

bench-triton: repository
	$(PY) -m bench.perf_triton

# the engine vs its ceiling, the controller's trace, then the line with and without a job
bench-batch: repository
	$(PY) -m bench.batch_bench
	$(PY) -m bench.line_beside --photos 0 --section batch-line

bench-gateway: repository
	$(PY) -m bench.gateway_bench

# P6: full-size GFPGAN (random init, real compute), resident vs loaded per photo, batch vs 1 by 1
bench-enhance: venv
	$(PY) -m bench.enhance_bench

# the line's latency while a 20-photo enhancement batch is uploaded and processed
bench-line-beside: venv
	$(PY) -m bench.line_beside

# the anomaly model (issue 17): fit on good boards, AUROC/recall on defect kinds the detector
# never saw, detector alone vs detector + anomaly, and its cost on pcb_inspect (on vs off)
bench-anomaly: repository
	$(PY) -m bench.anomaly_eval

# the line's latency with a shadow detector version mirrored every frame, vs without (issue 18)
bench-shadow: repository
	$(PY) -m bench.shadow_bench

# two cameras at a rising rate through the gateway: the highest rate served (board p99 < 300 ms,
# nothing skipped) against the in-process pipeline and the seed design; the cold first board
bench-line: repository
	$(PY) -m bench.line_capacity

bench-overhead: repository
	$(PY) -m bench.triton_overhead

bench-levers: repository
	$(PY) -m bench.levers

# py-spy on the gateway while the line runs: the share of its busy time under each cost
bench-profile: repository
	$(PY) -m bench.gateway_profile

# Two phases: from scratch with mosaic for variety, then without mosaic (it shrinks the small
# defects to a few pixels) and milder scale jitter. ~1 h on 2 cores.
train: venv
	$(PY) -m export train --epochs 15 --out build/train --run-name phase1
	$(PY) -m export train --epochs 30 --out build/train --run-name phase2 --mosaic 0 --scale 0.25 \
		--init build/train/phase1/weights/last.pt --weights-out $(WEIGHTS)

export-tensorrt-dry-run: venv
	$(PY) -m export yolo --weights $(WEIGHTS) --target tensorrt --fp16 --max-batch 32 \
		--repository build/model_repository_gpu --dry-run

# ruff, then mypy over the packages ([tool.mypy] in pyproject.toml); part of `make test`
lint: venv
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

clean:
	rm -rf build $(REPO)/pcb_detector $(REPO)/pcb_detector_batch $(REPO)/pcb_inspect_batch $(REPO)/face_restorer $(REPO)/bg_upsampler
