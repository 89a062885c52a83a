#!/usr/bin/env bash
# Builds the wheelhouse the deploy roles copy to the app hosts, so that hosts install the
# service with `pip install --no-index` and never need PyPI: the project's own wheel plus every
# runtime dependency, pinned by requirements-lock.txt, for each CPython the supported Debian
# releases ship (3.11 on Debian 12, 3.13 on Debian 13).
#
#   scripts/build_wheelhouse.sh [OUT_DIR]     (default .cache/wheelhouse)
#
# Rebuilds only when the sources, pyproject.toml or the lock changed (a stamp holds their
# digest), so the files keep their bytes and a deploy that copies them stays idempotent.
# Prints "wheelhouse: built" or "wheelhouse: up to date" as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.cache/wheelhouse}
pythons=(3.11 3.13)
py=${PYTHON:-.venv/bin/python}
# One build at a time per wheelhouse: a test session converges the lab while other tests build too.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9

digest=$( (cat scripts/build_wheelhouse.sh pyproject.toml requirements-lock.txt; find service -type f \( -name '*.py' -o -name '*.sql' \) \
    -not -path '*/__pycache__/*' | sort | xargs cat) | sha256sum | cut -d' ' -f1)
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$digest" ]; then
    echo "wheelhouse: up to date"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The project's own wheel is pure Python: one for all. A fixed date keeps it reproducible.
SOURCE_DATE_EPOCH=1700000000 "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/own" . 2>/dev/null \
    || SOURCE_DATE_EPOCH=1700000000 "$py" -m pip wheel -q --no-deps -w "$tmp/own" .
# Runtime dependencies only, at the locked versions.
"$py" - "$tmp/runtime.txt" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
open(sys.argv[1], "w").write("\n".join(sorted(names)) + "\n")
PY
for v in "${pythons[@]}"; do
    dest="$tmp/py${v/./}"
    mkdir -p "$dest"
    cp "$tmp"/own/*.whl "$dest/"
    # pip evaluates python_full_version markers against the running interpreter, not the
    # target: Debian 12's Python is 3.11.2, for which redis also wants async-timeout.
    extra_reqs=()
    if [ "$v" = 3.11 ]; then extra_reqs=(async-timeout); fi
    "$py" -m pip download -q -d "$dest" --only-binary=:all: --python-version "$v" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -c requirements-lock.txt -r "$tmp/runtime.txt" \
        ${extra_reqs[@]+"${extra_reqs[@]}"}
    echo "wheelhouse: python $v: $(ls "$dest" | wc -l) wheels"
done
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out.new" && rm -rf "$out.new/own" "$out.new/runtime.txt" && mv "$out.new" "$out"
trap - EXIT
echo "$digest" > "$out/.stamp"
echo "wheelhouse: built"
