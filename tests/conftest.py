"""Settings for the whole suite: one intra-op thread per test process, and no cached plugin index.

Threads: pytest-xdist runs one worker per core (``-n 2`` on two cores). Torch's
default of one intra-op thread per core would put two threads on each core,
and oversubscribed cores make tiny tensor operations many times slower
(``examples/fit_spiral.py`` took 283 s instead of 9 s that way). So each
worker, and each plain pytest process, uses one thread; ``OMP_NUM_THREADS`` is
set before anything imports torch so that OpenMP agrees, and subprocesses the
tests start inherit it.

Plugin index: tests build registries from fake plugin sites
(``tests/cli/conftest.py``); a cache of the real installation's registry
must not answer for them, nor may tests write into the user's cache. Tests of
the index itself switch it back on with a temporary cache directory.

Hypothesis: the property-based suites (``tests/**/test_fuzz_*.py``) run a few
examples per test by default (the ``ci`` profile, fast enough for every run);
``pytest --hypothesis-profile=long`` explores many more.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["NEURODE_PLUGIN_INDEX"] = "0"

from hypothesis import HealthCheck, settings  # noqa: E402

# no deadline: a solve's first call pays for imports and plugin loading; example counts keep the suite fast
settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already ran: nothing more to do
        pass
