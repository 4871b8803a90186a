"""The SLURM job templates: the packaged ones (what `selfsup launch` renders) and their
copies in the top-level launch/, where users look, must be byte-identical."""

from importlib import resources

import pytest

from conftest import REPO
from selfsup.commands.launch import packaged_template

NAMES = ("pretrain.sbatch", "probe_array.sbatch")


@pytest.mark.parametrize("name", NAMES)
def test_launch_copies_are_byte_identical_to_the_packaged_templates(name):
    packaged = packaged_template(name)
    copy = REPO / "launch" / name
    assert packaged.is_file(), f"packaged template {packaged} is missing"
    assert copy.is_file(), (
        f"launch/{name} is missing: copy the packaged file over it: "
        f"cp ssl/selfsup/commands/templates/{name} launch/{name}"
    )
    assert copy.read_bytes() == packaged.read_bytes(), (
        f"launch/{name} differs from the packaged template {packaged} (what `selfsup launch` "
        f"uses): edit the packaged one and copy it over: "
        f"cp ssl/selfsup/commands/templates/{name} launch/{name}"
    )


def test_launch_holds_no_stray_templates():
    """A template added to the package needs its copy here, and the other way round."""
    folder = resources.files("selfsup.commands") / "templates"
    packaged = {p.name for p in folder.iterdir() if p.name.endswith(".sbatch")}
    copies = {p.name for p in (REPO / "launch").glob("*.sbatch")}
    assert packaged == set(NAMES) and copies == packaged, (
        f"packaged {sorted(packaged)}, launch/ {sorted(copies)}: copy each packaged template "
        "from ssl/selfsup/commands/templates/ to launch/"
    )
