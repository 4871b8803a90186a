import subprocess
import sys

from conftest import REPO


def test_import_ssl_from_repo_root_is_the_standard_library():
    # `python -c` puts the working directory (the repository root) first on sys.path:
    # ssl/ must stay a plain source root so `import ssl` still finds Python's module.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ssl; print(ssl.__file__); print(hasattr(ssl, 'SSLContext'))",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not out[0].startswith(str(REPO)), out[0]
    assert out[1] == "True"
    assert not (REPO / "ssl" / "__init__.py").exists()


def test_selfsup_runs_as_module_from_repo_root():
    out = subprocess.run(
        [sys.executable, "-m", "selfsup.cli", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("selfsup ")
