# msa — make run (a demo MSA on loopback), make test, make fuzz, make dist.
# Every target makes what it needs: the virtual environment, the demo
# certificate and configuration.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo
DEMO_STARTTLS_PORT ?= 10587
DEMO_TLS_PORT ?= 10465
FUZZ_EXAMPLES ?= 100000

.PHONY: run test fuzz dist lint clean demo-files bench

$(VENV)/.ready: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# -- the demo -------------------------------------------------------------------------------
$(DEMO)/cert.pem:
	mkdir -p $(DEMO)
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN=localhost \
	  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	  -keyout $(DEMO)/key.pem -out $(DEMO)/cert.pem 2>/dev/null
	chmod 600 $(DEMO)/key.pem

$(DEMO)/users.db: users.db.example
	mkdir -p $(DEMO)
	install -m 600 users.db.example $@

$(DEMO)/app-passwords.db: app-passwords.db.example
	mkdir -p $(DEMO)
	install -m 600 app-passwords.db.example $@

$(DEMO)/msa.conf:
	mkdir -p $(DEMO)
	printf '%s\n' '[msa]' \
	  'hostname = localhost' \
	  'listen = 127.0.0.1:$(DEMO_STARTTLS_PORT) starttls, 127.0.0.1:$(DEMO_TLS_PORT) tls' \
	  'tls_cert = cert.pem' 'tls_key = key.pem' 'users = users.db' 'spool = spool' 'state_dir = state' \
	  'sendmail = $(CURDIR)/contrib/demo-sendmail $(CURDIR)/$(DEMO)/mail' \
	  'timeout = 300' > $@

demo-files: $(DEMO)/cert.pem $(DEMO)/users.db $(DEMO)/app-passwords.db $(DEMO)/msa.conf

run: $(VENV)/.ready demo-files
	$(PY) msa.py check -c $(DEMO)/msa.conf
	@echo
	@echo "msa demo: STARTTLS on 127.0.0.1:$(DEMO_STARTTLS_PORT), implicit TLS on 127.0.0.1:$(DEMO_TLS_PORT)"
	@echo "Log in as user 'demo', password 'correct horse battery'; it may send as demo@example.com or any @demo.example address."
	@echo "Send a test message from another terminal, for example:"
	@echo "  swaks --server 127.0.0.1:$(DEMO_STARTTLS_PORT) --tls -au demo -ap 'correct horse battery' \\"
	@echo "        --from demo@example.com --to you@example.net"
	@echo "  or see README.md for a Python smtplib one-liner."
	@echo "Each message msa hands on appears in $(DEMO)/mail/. Stop with Ctrl-C."
	@echo
	$(PY) msa.py serve -c $(DEMO)/msa.conf

# -- tests ----------------------------------------------------------------------------------
# Most tests wait on sockets and child processes: four workers (pytest-xdist)
# keep `make test` well under 5 minutes on 2 cores. TEST_WORKERS=0: one process.
# --dist loadgroup: the tests marked xdist_group("sql"), ("dovecot") or ("redis")
# run in one worker each, so each private server starts once per run; the
# others still spread.
TEST_WORKERS ?= 4
test: $(VENV)/.ready
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# Long property-based runs of the parsers and state machines; prints how many
# examples each target ran (hypothesis statistics).
fuzz: $(VENV)/.ready
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/property \
	  --hypothesis-show-statistics

lint: $(VENV)/.ready
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check msa.py $(PACKAGES) tests

# -- benchmark: msa against aiosmtpd, Postfix and the floors (bench/run.py, DESIGN.md) --------
# make bench [PROFILE=caseN [PROFILER=cprofile]] [CASES=1,3]; about 2-4 minutes on 2 cores.
bench: $(VENV)/.ready
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements-bench.txt
	$(PY) bench/run.py --command "make bench$(if $(PROFILE), PROFILE=$(PROFILE))$(if $(PROFILER), PROFILER=$(PROFILER))$(if $(CASES), CASES=$(CASES))"$(if $(PROFILE), --profile $(PROFILE))$(if $(PROFILER), --profiler $(PROFILER))$(if $(CASES), --cases $(CASES))

# -- the single-file build (DESIGN.md "Build and deploy") -------------------------------------
dist: msa.pyz

PACKAGES := smtp_states sasl headers signing util state directory delivery server admin

msa.pyz: Makefile msa.py $(foreach p,$(PACKAGES),$(wildcard $(p)/*.py))
	rm -rf build && mkdir -p build
	cp msa.py build/
	for pkg in $(PACKAGES); do \
	  mkdir -p build/$$pkg && cp $$pkg/*.py build/$$pkg/; done
	find build -exec touch -h -d '2020-01-01 00:00:00' {} +
	# Bytecode beside each source (unchecked-hash .pyc, which zipimport
	# uses as is): the host skips compiling at every start. Another Python
	# version ignores it and compiles the sources.
	$(PYTHON) -m compileall -q -b --invalidation-mode unchecked-hash build
	$(PYTHON) -m zipapp build -m msa:main -p "/usr/bin/env python3" -o $@
	@echo "built $@; it needs Python 3.10+ and argon2-cffi on the host (Debian: python3-argon2, python3-idna)"

clean:
	rm -rf build msa.pyz $(DEMO)
