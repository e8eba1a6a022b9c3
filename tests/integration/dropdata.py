"""One fixture for both pytest suites (tests/integration, tests/fuse): a passed test's
temp dir (volumes, logs, metadata) is removed once its servers are stopped; a whole run
would otherwise leave gigabytes behind. A failed test's stays for its logs. The suite's
pytest_runtest_makereport calls note_outcome."""

import shutil

import pytest


def note_outcome(item, rep):
    if rep.when == "call":
        item._kelp_call_passed = rep.passed


@pytest.fixture(autouse=True)
def _drop_data_of_passed_tests(request, tmp_path):
    # autouse and set up first: torn down after the fixtures that stop the servers
    yield
    if getattr(request.node, "_kelp_call_passed", False):
        shutil.rmtree(tmp_path, ignore_errors=True)
