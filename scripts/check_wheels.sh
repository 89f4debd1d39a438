#!/usr/bin/env bash
# Runs the README's Install commands, exactly as written, each in a fresh virtualenv with the
# wheelhouse `make wheels` built in dist/, then runs a job through what the line installed
# (scripts/install_smoke/smoke_*.py). A missing dependency declaration fails here, where the
# editable dev install would hide it; a README line with no check, or a check with no README
# line, fails too, so the two cannot drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ls dist/*.whl >/dev/null

# The install lines of the README's "Install" section, comments cut off.
mapfile -t lines < <(
  sed -n '/^## Install/,/^## /p' README.md | grep '^pip install --find-links dist ' | sed 's/ *#.*$//'
)
[ "${#lines[@]}" -ge 8 ] || { echo "README Install section: expected 8 install lines, found ${#lines[@]}"; exit 1; }

# Which check runs after which line: the line's packages, in the README's words.
smoke_for() {
  case "$1" in
    "dispatch-core dispatch-sqlite") echo sqlite ;;
    "dispatch-core dispatch-postgres") echo postgres ;;
    "dispatch-core dispatch-redis") echo redis ;;
    "dispatch-sqlite dispatch-admin") echo admin ;;
    "dispatch-sqlite dispatch-otel dispatch-webhooks") echo observe ;;
    "dispatch-sqlite dispatch-flask dispatch-starlette dispatch-celery") echo adapters ;;
    'dispatch-sqlite "dispatch-flask[admin]"') echo flask_admin ;;
    '"dispatch-core[testing]"') echo testing ;;
    *) echo "" ;;
  esac
}

declare -A done_smokes=()
for line in "${lines[@]}"; do
  packages=${line#pip install --find-links dist }
  smoke=$(smoke_for "$packages")
  [ -n "$smoke" ] || { echo "README install line has no check in $0: $line"; exit 1; }
  echo "== $line"
  venv="$tmp/venv-$smoke"
  python3 -m venv "$venv"
  # The line as written, with this venv's pip, from the repository root (where dist/ is).
  (cd "$root" && eval "\"$venv/bin/python\" -m $line --quiet")
  work="$tmp/work-$smoke"
  mkdir -p "$work"
  (cd "$work" && "$venv/bin/python" "$root/scripts/install_smoke/smoke_$smoke.py")
  case "$smoke" in
    sqlite)
      "$venv/bin/dispatch" --help >/dev/null && echo "dispatch CLI from the wheel: ok"
      mkdir -p "$tmp/quickstart"
      (cd "$tmp/quickstart" && "$venv/bin/python" "$root/scripts/readme_quickstart.py")
      ;;
    admin) "$venv/bin/dispatch" serve --help >/dev/null && echo "dispatch serve from the wheel: ok" ;;
  esac
  done_smokes[$smoke]=1
done

# The newer Pythons the classifiers name, where this machine has them (on PATH, or pyenv's):
# the first install line and the README quick start in each.
newer=()
for minor in 12 13; do
  for found in "$(command -v "python3.$minor" 2>/dev/null || true)" \
    "$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3."$minor".*/bin/python3 \
      2>/dev/null | tail -n 1)"; do
    # A pyenv shim exists for every version but runs only the selected ones: try each.
    if [ -n "$found" ] && "$found" -c pass >/dev/null 2>&1; then newer+=("$found"); break; fi
  done
done
for py in "${newer[@]}"; do
  version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  echo "== Python $version: ${lines[0]}"
  venv="$tmp/venv-py$version"
  "$py" -m venv "$venv"
  (cd "$root" && eval "\"$venv/bin/python\" -m ${lines[0]} --quiet")
  mkdir -p "$tmp/work-py$version/quickstart"
  (cd "$tmp/work-py$version" && "$venv/bin/python" "$root/scripts/install_smoke/smoke_sqlite.py")
  (cd "$tmp/work-py$version/quickstart" && "$venv/bin/python" "$root/scripts/readme_quickstart.py")
done

for f in scripts/install_smoke/smoke_*.py; do
  name=$(basename "$f" .py)
  name=${name#smoke_}
  [ -n "${done_smokes[$name]:-}" ] || { echo "$f checks a line the README no longer has"; exit 1; }
done
echo "install check ok: all ${#lines[@]} README install lines"
