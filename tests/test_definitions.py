"""Every image recipe parses, declares defaults for its build arguments and has the sections a site needs.

photpipe (not public) and the HSC pipelines (network install of lsst_distrib) cannot be built on
these machines; Apptainer has no dry-run parse, so the recipes are checked by dwfhpc's own parser
(structure, sections, build-argument defaults) here, and the base image is built for real in
tests/test_containers.py.
"""


import pytest

from dwfhpc.errors import DwfError
from dwfhpc.images import definition, parse_definition


@pytest.mark.parametrize("name", ["dwfhpc", "photpipe", "hscpipe"])
def test_recipe_parses_with_defaults_for_every_build_argument(name):
    d = parse_definition(definition(name))
    assert d["header"]["bootstrap"] == "debootstrap" and d["header"]["osversion"] == "bookworm"
    assert {"arguments", "files", "post", "environment", "runscript", "test", "labels"} <= set(d["sections"])
    assert "wheel" in d["arguments"] and "mirror" in d["arguments"]
    assert "org.dwfhpc.commit {{ commit }}" in d["sections"]["labels"]
    assert "pip install" in d["sections"]["post"] and "{{ wheel }}" in d["sections"]["post"]


def test_recipes_state_what_the_admin_must_supply():
    photpipe = definition("photpipe").read_text()
    hscpipe = definition("hscpipe").read_text()
    assert "NEEDS FROM THE ADMIN" in photpipe and "photpipe_tarball" in photpipe and "PIPE_DATA" in photpipe
    assert "NEEDS FROM THE ADMIN" in hscpipe and "hscpipe_tag" in hscpipe and "eups distrib install" in hscpipe


def test_parser_rejects_broken_recipes(tmp_path):
    bad = tmp_path / "bad.def"
    bad.write_text("Bootstrap: debootstrap\n%post\n  echo {{ undeclared }}\n")
    with pytest.raises(DwfError, match="undeclared used but given no default"):
        parse_definition(bad)
    bad.write_text("Bootstrap: debootstrap\n%postt\n  true\n")
    with pytest.raises(DwfError, match="unknown section %postt"):
        parse_definition(bad)
    bad.write_text("%post\n  true\n")
    with pytest.raises(DwfError, match="no Bootstrap"):
        parse_definition(bad)
