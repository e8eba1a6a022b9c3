"""The metadata unit tests (tests/unit/test_meta.c, cmocka) on the PostgreSQL engine:
the same binary meson runs on LMDB, given the session's throwaway PostgreSQL server in
KELP_TEST_PG_URL (each test then creates and drops its own database)."""

import os
import subprocess

import pytest


def test_meta_unit_tests_on_postgres(kelp_bin, pg_server):
    exe = os.path.join(os.path.dirname(os.path.dirname(kelp_bin)), "tests", "test_meta")
    if not os.access(exe, os.X_OK):
        pytest.fail("no %s (build the tests)" % exe)
    env = dict(os.environ, KELP_TEST_PG_URL=pg_server.admin_url)
    r = subprocess.run([exe], capture_output=True, timeout=600, env=env,
                       stdin=subprocess.DEVNULL)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, out[-5000:]
    assert "PASSED" in out and "FAILED" not in out, out[-5000:]
