"""auditlog.ops stays a real collection: its README names every plugin, galaxy.yml's version is
the CHANGELOG's latest, meta/runtime.yml's requires_ansible admits the ansible-core the project
runs, and every module carries the header and documentation scripts/sanity.sh relies on.
(`make sanity` runs ansible-test itself.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.compat.version import LooseVersion
from ansible.release import __version__ as core_version

COLLECTION = Path(__file__).resolve().parents[2] / "collections/ansible_collections/auditlog/ops"
README = (COLLECTION / "README.md").read_text()

# Plugin types named in the README as auditlog.ops.NAME, and those named as NAME alone.
FQCN_TYPES = ("modules", "action", "filter", "test", "lookup", "callback", "inventory", "doc_fragments")
SHORT_TYPES = ("module_utils", "plugin_utils")


def plugins(types):
    for kind in types:
        for path in sorted((COLLECTION / "plugins" / kind).glob("*.py")):
            if path.name != "__init__.py":
                yield pytest.param(kind, path, id=f"{kind}/{path.stem}")


@pytest.mark.parametrize(("kind", "path"), plugins(FQCN_TYPES))
def test_the_readme_names_every_plugin(kind, path):
    assert f"`auditlog.ops.{path.stem}`" in README, (
        f"plugins/{kind}/{path.name} has no row in {COLLECTION / 'README.md'}: "
        f"add `auditlog.ops.{path.stem}` to its section"
    )


@pytest.mark.parametrize(("kind", "path"), plugins(SHORT_TYPES))
def test_the_readme_names_every_module_util(kind, path):
    assert f"`{path.stem}`" in README, f"plugins/{kind}/{path.name} has no row in the collection's README"


def test_the_galaxy_version_is_the_changelogs_latest():
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    latest = re.search(r"^## (\S+)", (COLLECTION / "CHANGELOG.md").read_text(), re.M).group(1)
    assert (galaxy["namespace"], galaxy["name"]) == ("auditlog", "ops")
    assert galaxy["version"] == latest


def test_requires_ansible_admits_the_core_the_project_runs():
    runtime = yaml.safe_load((COLLECTION / "meta/runtime.yml").read_text())
    minimum = re.fullmatch(r">=\s*([\d.]+)", runtime["requires_ansible"]).group(1)
    assert LooseVersion(core_version) >= LooseVersion(minimum)


def module_docs(path):
    tree = ast.parse(path.read_text())
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }


@pytest.mark.parametrize(("kind", "path"), plugins(("modules",)))
def test_every_module_has_its_license_header_and_documentation(kind, path):
    # scripts/sanity.sh exempts a module from validate-modules' GPLv3 header check only when its
    # first 20 lines say so; without it the module fails there.
    assert "MIT License" in "\n".join(path.read_text().splitlines()[:20])
    docs = module_docs(path)
    for name in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
        assert name in docs, f"{path.name} has no {name}"
    documentation = yaml.safe_load(docs["DOCUMENTATION"])
    assert documentation["module"] == path.stem
    version_added = str(documentation["version_added"])
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    assert LooseVersion(version_added) <= LooseVersion(str(galaxy["version"])), (
        f"{path.name}: version_added {version_added} is later than the collection's {galaxy['version']}"
    )
