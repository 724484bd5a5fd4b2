# The two commands a new user needs: `make demo` and `make test`. Both create .venv first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.swm-installed
# ROS 2 in tests and demos: loopback discovery only, the one RMW the wheels ship, headless GL.
RUNENV := env -u RMW_IMPLEMENTATION -u ROS_LOCALHOST_ONLY -u _ROS_WHEELS_BOOTSTRAP_COMPLETE \
          ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST MUJOCO_GL=egl PYTHONUNBUFFERED=1
PYTEST_ARGS ?= -n 2

.PHONY: venv demo test bench clean

venv: $(STAMP)

# Re-run the install when dependencies or interfaces change; otherwise `make venv` is a no-op.
$(STAMP): requirements.txt pyproject.toml CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@touch $(STAMP)

demo: venv
	$(RUNENV) $(VENV)/bin/swm demo

test: venv
	$(RUNENV) $(PY) -m pytest $(PYTEST_ARGS) test

bench: venv
	$(RUNENV) $(VENV)/bin/swm bench env --json

clean:
	rm -rf build runs
