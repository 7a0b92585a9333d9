# Everything installs into .venv on first use; torch is pinned first (a CPU build is on this disk).
PY      := .venv/bin/python
STAMP   := .venv/.installed
TEST_WORKERS ?= 2
export PYTHONDONTWRITEBYTECODE=1

.PHONY: install demo test test-quick lint bench bench-quick bench-readme man samples clean train-tokenizer export-tokenizer train-lit export-lit calibrate-tinytok

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,diffusers]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo-out && mkdir -p demo-out
	.venv/bin/adaptok compress sample_videos/static_ball.mp4 -o demo-out/static_ball.atok
	.venv/bin/adaptok inspect demo-out/static_ball.atok
	.venv/bin/adaptok decompress demo-out/static_ball.atok -o demo-out/static_ball.decoded.mp4
	@echo "demo: wrote demo-out/static_ball.atok and demo-out/static_ball.decoded.mp4 (manual: man ./man/adaptok.1)"

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS)

# for development: everything but the tests marked slow (make test, and CI, run them all)
test-quick: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow"

lint: $(STAMP)
	.venv/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.bench

bench-quick: $(STAMP)
	$(PY) -m bench.bench --quick

bench-readme: $(STAMP)
	$(PY) -m bench.bench --readme

man: $(STAMP)
	$(PY) scripts/make_man.py > man/adaptok.1

samples: $(STAMP)
	$(PY) sample_videos/make_samples.py

# the shipped weights and how they were made: docs/MODELS.md
train-tokenizer: $(STAMP)
	$(PY) -m adaptok_cli.training.tokenizer --out runs/tinytok --steps 40000 --stop-at 29769
	$(PY) -m adaptok_cli.training.tokenizer --out runs/tinytok --steps 32000
	$(PY) -m adaptok_cli.training.tokenizer --out runs/tinytok --export runs/tinytok/base.safetensors
	$(PY) -m adaptok_cli.training.tokenizer --out runs/smooth1 --init runs/tinytok/base.safetensors --temporal-l1 0.1 --steps 600 --lr 2e-4
	$(PY) -m adaptok_cli.training.tokenizer --out runs/smooth1 --export runs/smooth1/tinytok.safetensors
	$(PY) -m adaptok_cli.training.tokenizer --out runs/smooth2 --init runs/smooth1/tinytok.safetensors --temporal-l1 0.1 --hold-weight 1 --steps 800 --lr 2e-4

export-tokenizer: $(STAMP)
	$(PY) -m adaptok_cli.training.tokenizer --out runs/smooth2 --export adaptok_cli/weights/tinytok.safetensors

train-lit: $(STAMP)
	$(PY) -m adaptok_cli.training.lit --out runs/lit-base --tokenizer runs/tinytok/base.safetensors
	$(PY) -m adaptok_cli.training.lit --out runs/lit-base --tokenizer runs/tinytok/base.safetensors --export runs/lit-base/lit.safetensors
	$(PY) -m adaptok_cli.training.lit --out runs/lit --init runs/lit-base/lit.safetensors --steps 800 --lr 3e-4

export-lit: $(STAMP)
	$(PY) -m adaptok_cli.training.lit --out runs/lit --export adaptok_cli/weights/lit-tinytok.safetensors

clean:
	rm -rf demo-out .pytest_cache build *.egg-info

# TinyTok's calibration (the rule's decoder-weighted unit), measured on the train clips (not distributed)
calibrate-tinytok: $(STAMP)
	$(PY) -m adaptok_cli.training.calibrate
