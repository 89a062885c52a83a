#!/usr/bin/env bash
# ansible-test's sanity tests on the project's collection (auditlog.ops): validate-modules (every
# module's DOCUMENTATION / EXAMPLES / RETURN against its argument_spec), ansible-doc (every plugin's
# documentation renders), runtime-metadata (meta/runtime.yml) and action-plugin-docs (an action
# plugin has the module that documents it); then `ansible-galaxy collection build` into a temporary
# folder. `make sanity` runs it, and `make test` runs that. Exits non-zero on any finding, printed.
#
# Works on a machine that cannot reach ansible-test's own download site:
# - ansible-test bootstraps pip into each sanity virtualenv with a get-pip.py it downloads from
#   that site, unless ~/.ansible/test/cache/get_pip_<version>.py exists. This script writes a
#   stand-in there that bootstraps pip with the standard library's ensurepip, then installs the pip
#   version ansible-test asked for; the sanity requirements then come from the package index that
#   pip is configured with (pip.conf), as for any pip install on the machine.
# - ansible-test runs pip with an environment of its own (PATH, HOME, a locale), so PIP_* settings
#   given in the environment (PIP_INDEX_URL, PIP_CERT, ...) would be lost: the stand-in writes them
#   into the new virtualenv's own pip.conf, which pip reads before the user's and the machine's.
# - A real get-pip.py found in the cache (one without the stand-in's first line) is left alone.
#
# License header: validate-modules wants a GPLv3 header in each module and documented plugin
# (ansible-core's own rule; the collection guidelines allow any GPLv3-compatible license). This
# collection is MIT, as the whole repository is, so each of those files whose first 20 lines say
# "MIT License" is exempted from that one check (validate-modules:missing-gplv3-license) in a
# generated, git-ignored tests/sanity/ignore-<core>.txt, and from nothing else. A file without
# that header still fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/.venv/bin
coll=collections/ansible_collections/auditlog/ops
tests=(validate-modules ansible-doc runtime-metadata action-plugin-docs)

# The pip version ansible-test bootstraps, and the ansible-core version (major.minor) that names
# the ignore file.
read -r pip_version core_version < <("$venv/python" - <<'EOF'
import sys
import ansible.release
from ansible_test._internal.host_configs import NativePythonConfig
from ansible_test._internal.python_requirements import get_venv_packages
python = NativePythonConfig(version="%d.%d" % sys.version_info[:2])
print(get_venv_packages(python)["pip"], ".".join(ansible.release.__version__.split(".")[:2]))
EOF
)

marker="# auditlog.ops stand-in for get-pip.py, written by scripts/sanity.sh"
standin=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$standin")"
if [ ! -s "$standin" ] || [ "$(head -n 1 "$standin")" = "$marker" ]; then
    # Rewritten at every run, so that it carries the PIP_* settings of this run's environment.
    umask 077
    {
        echo "$marker"
        "$venv/python" -c 'import json, os
skip = ("PIP_CONFIG_FILE", "PIP_BREAK_SYSTEM_PACKAGES")
settings = {k[4:].lower().replace("_", "-"): v for k, v in sorted(os.environ.items())
            if k.startswith("PIP_") and k not in skip}
print("PIP_SETTINGS = %s" % json.dumps(settings, indent=4))'
        cat <<'EOF'
# ansible-test runs this with the new virtualenv's python as `get_pip.py [pip options] pip==X ...
# [--no-setuptools] [--no-wheel]`, as it would the real get-pip.py.
import os
import subprocess
import sys


def main():
    # This run's PIP_* settings, and quiet installs (pip's errors are still shown).
    conf = os.path.join(sys.prefix, "pip.conf")
    with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("[global]\n")
        for key, value in dict(PIP_SETTINGS, quiet="1").items():
            f.write("%s = %s\n" % (key, value))
    run([sys.executable, "-m", "ensurepip"])
    args = sys.argv[1:]
    extras = [name for name in ("setuptools", "wheel") if "--no-" + name in args]
    args = [arg for arg in args if arg not in ("--no-setuptools", "--no-wheel")]
    run([sys.executable, "-m", "pip", "install", "-q"] + args)
    if extras:  # ensurepip installs setuptools with pip on Python < 3.12
        run([sys.executable, "-m", "pip", "uninstall", "-q", "-y"] + extras)


def run(cmd):
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if result.returncode:
        sys.stderr.write(result.stdout)
        sys.exit("get_pip stand-in: %s failed (exit %d)" % (" ".join(cmd), result.returncode))


main()
EOF
    } >"$standin.new"
    mv "$standin.new" "$standin"
fi

# The plugins validate-modules checks: modules and every other documentable type but filter and
# test plugins (ansible-test's own choice), each under plugins/<type>/.
ignore=$coll/tests/sanity/ignore-$core_version.txt
mkdir -p "$(dirname "$ignore")"
rm -f "$coll"/tests/sanity/ignore-*.txt
"$venv/python" - "$coll" >"$ignore" <<'EOF'
import sys
from pathlib import Path

from ansible.constants import DOCUMENTABLE_PLUGINS

coll = Path(sys.argv[1])
for kind in sorted(set(DOCUMENTABLE_PLUGINS) - {"filter", "test"}):
    folder = "modules" if kind == "module" else kind
    for path in sorted((coll / "plugins" / folder).glob("*.py")):
        header = path.read_text().splitlines()[:20]
        if path.name != "__init__.py" and any("MIT License" in line for line in header):
            print(f"{path.relative_to(coll)} validate-modules:missing-gplv3-license")
EOF

start=$SECONDS
args=()
for test in "${tests[@]}"; do args+=(--test "$test"); done
(cd "$coll" && "$venv/ansible-test" sanity "${args[@]}" --color no)
echo "sanity: ansible-test sanity ${tests[*]}: passed in $((SECONDS - start)) s"

# The collection builds, with nothing from the tests' output or the generated ignore file in it.
start=$SECONDS
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/ansible-galaxy" collection build "$coll" --output-path "$out" >/dev/null
tarball=$(echo "$out"/auditlog-ops-*.tar.gz)
unwanted=$(tar -tzf "$tarball" | grep -E '(^|/)(tests/output|tests/sanity|__pycache__)(/|$)|\.pyc$' || true)
if [ -n "$unwanted" ]; then
    echo "sanity: the built collection holds files it should not (galaxy.yml build_ignore):" >&2
    echo "$unwanted" >&2
    exit 1
fi
echo "sanity: ansible-galaxy collection build: ${tarball##*/}, $(tar -tzf "$tarball" | wc -l) entries," \
    "in $((SECONDS - start)) s"
