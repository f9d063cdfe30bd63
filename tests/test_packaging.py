"""A non-editable `pip install .` into a fresh virtual environment finds the config schema inside the
package and validates the example configs, away from the source tree."""

import subprocess
import sys
import venv

import pytest
from workflow import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_installed_package_validates_the_configs(tmp_path):
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # the package itself without its heavy dependencies; config validation needs only these two
    subprocess.run([*install, "--no-deps", str(REPO)], check=True, cwd=tmp_path)
    subprocess.run([*install, "pyyaml", "jsonschema"], check=True, cwd=tmp_path)
    code = (
        "import sys, inscl\n"
        "from inscl.core.config import load_config\n"
        "assert 'site-packages' in inscl.__file__, inscl.__file__\n"
        "for path in sys.argv[1:]:\n"
        "    config = load_config(path)\n"
        "    print(path, len(config['orders']), config['training']['learning_rate'])\n"
    )
    configs = [
        str(REPO / "config.yaml"),
        str(REPO / ".test" / "config.yaml"),
        *map(str, sorted(REPO.glob("configs/*.yaml"))),
    ]
    result = subprocess.run([str(python), "-c", code, *configs], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == len(configs)
    assert sys.executable != str(python)
