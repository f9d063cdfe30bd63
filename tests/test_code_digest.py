"""inscl.core.code_digest: a digest changes when code a stage reaches changes, not for docstrings or
comments, and not for code the stage does not reach."""

import sys
import textwrap

import pytest

from inscl.core import code_digest


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway `inscl`-like package on sys.path, so the digest reads files we can edit."""
    root = tmp_path / "pkgroot"
    (root / "inscl" / "demo").mkdir(parents=True)
    (root / "inscl" / "__init__.py").write_text("")
    (root / "inscl" / "demo" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    for name in [m for m in sys.modules if m == "inscl" or m.startswith("inscl.")]:
        monkeypatch.delitem(sys.modules, name)
    for cache in (code_digest._source, code_digest._module, code_digest._script, code_digest.digest):
        cache.cache_clear()
    yield root / "inscl" / "demo"
    for cache in (code_digest._source, code_digest._module, code_digest._script, code_digest.digest):
        cache.cache_clear()


def write(folder, name, text):
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    for cache in (code_digest._module, code_digest._script, code_digest.digest):
        cache.cache_clear()


BASE = '''
    """Module docstring."""
    from inscl.demo.helpers import shared

    RATE = 2


    def used(x):
        """Docstring."""
        return helper(x) * RATE  # a comment


    def helper(x):
        return shared(x)


    def unused(x):
        return x + 1


    class Allocation:
        def split(self, n):
            return n // 2
'''
HELPERS = """
    def shared(x):
        return x - 1


    def other(x):
        return 0
"""


def test_docstrings_and_comments_do_not_change_the_digest(package):
    write(package, "helpers", HELPERS)
    write(package, "core", BASE)
    before = code_digest.digest("inscl.demo.core:used")
    write(package, "core", BASE.replace('"""Docstring."""', '"""Another docstring."""').replace("# a comment", ""))
    assert code_digest.digest("inscl.demo.core:used") == before


def test_reached_code_changes_the_digest_and_unreached_code_does_not(package):
    write(package, "helpers", HELPERS)
    write(package, "core", BASE)
    before = code_digest.digest("inscl.demo.core:used")
    write(package, "core", BASE.replace("return x + 1", "return x + 2"))  # `unused` is not reached
    assert code_digest.digest("inscl.demo.core:used") == before
    write(package, "helpers", HELPERS.replace("return 0", "return 1"))  # `other` is not reached
    assert code_digest.digest("inscl.demo.core:used") == before
    write(package, "helpers", HELPERS.replace("x - 1", "x - 2"))  # `shared` is, through an import
    assert code_digest.digest("inscl.demo.core:used") != before
    write(package, "helpers", HELPERS)
    write(package, "core", BASE.replace("RATE = 2", "RATE = 3"))  # a constant it reads
    assert code_digest.digest("inscl.demo.core:used") != before


def test_attribute_access_reaches_classes_and_modules(package):
    write(package, "helpers", HELPERS)
    write(package, "core", BASE)
    write(
        package,
        "user",
        """
        from inscl.demo import helpers
        from inscl.demo.core import Allocation


        def run(n):
            return Allocation().split(helpers.shared(n))
    """,
    )
    before = code_digest.digest("inscl.demo.user:run")
    write(package, "core", BASE.replace("n // 2", "n // 3"))
    assert code_digest.digest("inscl.demo.user:run") != before
    write(package, "core", BASE)
    write(package, "helpers", HELPERS.replace("return 0", "return 7"))  # helpers.other is not used
    assert code_digest.digest("inscl.demo.user:run") == before


def test_a_script_entry_covers_the_script_and_what_it_imports(package, tmp_path):
    write(package, "helpers", HELPERS)
    script = tmp_path / "rule.py"
    script.write_text('"""Adapter."""\nfrom inscl.demo.helpers import shared\n\nprint(shared(3))\n')
    before = code_digest.digest(str(script))
    script.write_text('"""Adapter, reworded."""\nfrom inscl.demo.helpers import shared\n\nprint(shared(3))\n')
    code_digest._script.cache_clear(), code_digest.digest.cache_clear()
    assert code_digest.digest(str(script)) == before
    script.write_text('"""Adapter."""\nfrom inscl.demo.helpers import shared\n\nprint(shared(4))\n')
    code_digest._script.cache_clear(), code_digest.digest.cache_clear()
    assert code_digest.digest(str(script)) != before


def test_the_real_replay_strategies_have_their_own_digests():
    code_digest.digest.cache_clear()
    inscl = code_digest.digest("inscl.replay.strategies:InsCL")
    random = code_digest.digest("inscl.replay.strategies:RandomSampling")
    dynamic = code_digest.digest("inscl.replay.strategies:DynamicOnly")
    assert len({inscl, random, dynamic}) == 3


def test_the_digest_is_the_same_in_every_process():
    """Python randomises str hashes per process: the digest must not depend on set order."""
    import os
    import subprocess
    import sys

    code = "from inscl.core.code_digest import digest; print(digest('inscl.training.train:run_job'))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in range(4)
    }
    assert len(seen) == 1 and len(seen.pop().strip()) == 16
