# Sourced by the scripts here: make .venv (Python >= 3.11) and install the package into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {  # apt_install PACKAGE...: install Debian packages that are missing
  local missing=()
  for package in "$@"; do
    # installed, not merely known (a removed package keeps its config files and dpkg -s says 0)
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" = installed ] ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || { echo "please install: ${missing[*]}" >&2; return 1; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

make_venv() {  # make_venv [EXTRAS]: .venv with the package installed (editable) with EXTRAS
  local python
  python=$(find_python) || { apt_install python3 python3-venv; python=$(find_python); } || {
    echo "agent_nb needs Python >= 3.11" >&2; exit 1; }
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; "$python" -m venv .venv; }
  fi
  local log=.venv/install.log
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${1:+[$1]}" >"$log" 2>&1; then
    cat "$log" >&2; echo "installing agent_nb failed (log above, also in $log)" >&2; exit 1
  fi
}
