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
  echo "installing ${missing[*]} with apt-get (the first time only; a minute or two)..." >&2
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
  # installed (editable) once, and again only when what pip reads changed: pyproject.toml,
  # the extras asked for, the Python; a code change needs no reinstall
  local log=.venv/install.log stamp=.venv/install.stamp want started
  want="${1:-none} $(cat pyproject.toml .venv/pyvenv.cfg | cksum)"
  if [ -f "$stamp" ] && grep -qxF -- "$want" "$stamp" 2>/dev/null; then
    return 0
  fi
  echo "installing agent_nb${1:+[$1]} and its dependencies into .venv" \
    "(when pyproject.toml changes; about 30 s to 3 min)..." >&2
  started=$SECONDS
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${1:+[$1]}" >"$log" 2>&1; then
    cat "$log" >&2; echo "installing agent_nb failed (log above, also in $log)" >&2; exit 1
  fi
  echo "$want" >>"$stamp"  # every set of extras installed so far
  echo "installed in $((SECONDS - started)) s" >&2
}

# llama-cpp-python (the llama extra) has no wheels on PyPI: it is built from source, CPU only,
# portable (no -march=native), without the multimodal library, and unoptimized: -O0 builds in
# about a third of -O3's time, and the tests' model is tiny. The wheel is kept outside the
# clone, so later runs, and fresh clones on the same machine, install it in seconds.
LLAMA_CPP_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_VULKAN=OFF"
LLAMA_CPP_CMAKE_ARGS+=" -DGGML_METAL=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF"
LLAMA_CPP_CMAKE_ARGS+=" -DCMAKE_C_FLAGS_RELEASE=-O0 -DCMAKE_CXX_FLAGS_RELEASE=-O0"
LLAMA_CPP_WHEELS=${AGENT_NB_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/agent_nb/wheels}

install_llama_cpp() {  # install the llama extra into .venv; if that fails, say why and go on
  local status=.venv/llama-cpp.status log=.venv/llama-cpp.log requirement started
  rm -f "$status"
  requirement=$(.venv/bin/python -c 'import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print(*extras["llama"])')
  local install=(.venv/bin/python -m pip install -q --disable-pip-version-check
    --find-links "$LLAMA_CPP_WHEELS" --only-binary llama-cpp-python "$requirement")
  "${install[@]}" >"$log" 2>&1 && return 0  # installed already, or its wheel is kept
  echo "building $requirement from source for the llama.cpp tests" \
    "(the first time only: several minutes; the wheel is kept in $LLAMA_CPP_WHEELS)" >&2
  apt_install g++ cmake ninja-build || echo "could not install g++ / cmake / ninja-build" >&2
  mkdir -p "$LLAMA_CPP_WHEELS"
  started=$SECONDS
  local sdist
  if ! sdist=$(_llama_sdist "$log"); then
    _llama_cpp_unavailable "downloading its sources failed" "$log" "$status"
    return 1
  fi
  # --no-cache-dir: this unusual build stays out of pip's cache, where other installs would find it
  if ! CMAKE_ARGS=$LLAMA_CPP_CMAKE_ARGS timeout 40m .venv/bin/python -m pip wheel -q \
      --disable-pip-version-check --no-cache-dir --no-deps -w "$LLAMA_CPP_WHEELS" \
      "$sdist" >>"$log" 2>&1; then
    _llama_cpp_unavailable "building it failed after $((SECONDS - started)) s" "$log" "$status"
    return 1
  fi
  echo "built llama-cpp-python in $((SECONDS - started)) s" >&2
  if ! "${install[@]}" >"$log" 2>&1; then
    _llama_cpp_unavailable "installing the built wheel failed" "$log" "$status"
    return 1
  fi
}

_llama_version() {  # the llama extra's pinned llama-cpp-python version
  .venv/bin/python -c 'import re, tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print(re.search(r"==\s*([\w.]+)", extras["llama"][0]).group(1))'
}

_llama_sdist() {  # LOG: the path of the llama extra's sdist, downloaded once for both builds
  local version sdist
  version=$(_llama_version)
  sdist="$LLAMA_CPP_WHEELS/sources/llama_cpp_python-$version.tar.gz"
  if [ ! -s "$sdist" ]; then  # into a folder of its own first: a stopped download is no sdist
    local partial
    mkdir -p "$LLAMA_CPP_WHEELS/sources"
    partial=$(mktemp -d "$LLAMA_CPP_WHEELS/sources/.partial.XXXXXX")
    # --no-binary for this package only: its build requirements come as wheels
    if ! .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps \
        --no-binary llama-cpp-python -d "$partial" "llama-cpp-python==$version" >>"$1" 2>&1 ||
       ! mv "$partial/$(basename "$sdist")" "$sdist" >>"$1" 2>&1; then
      rm -rf "$partial"
      return 1
    fi
    rm -rf "$partial"
  fi
  echo "$sdist"
}

_llama_cpp_unavailable() {  # REASON LOG STATUS [WHAT]: tell the terminal, and the tests (they skip)
  tail -n 20 "$2" >&2
  echo "${4:-llama-cpp-python}: $1 (log above, all of it in $2): the llama.cpp tests will skip" >&2
  echo "$1; see $2" >"$3"
}

# llama.cpp's own server, llama-server, for the context-window tests (its /props says the window
# it serves; llama-cpp-python's server has none): built from the llama.cpp that
# llama-cpp-python's sdist vendors, that target only, CPU only, -O0 like the wheel, without
# curl, OpenSSL or the web UI, linked statically. About 5 minutes on 2 cores, the first time:
# the binary is kept beside the wheels, named by llama-cpp-python's version.
LLAMA_SERVER_CMAKE_ARGS="$LLAMA_CPP_CMAKE_ARGS -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF"
LLAMA_SERVER_CMAKE_ARGS+=" -DLLAMA_CURL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF"
LLAMA_SERVER_CMAKE_ARGS+=" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
LLAMA_SERVER_CMAKE_ARGS+=" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON"

install_llama_server() {  # build llama-server once; if that fails, say why and go on
  local status=.venv/llama-server.status log=.venv/llama-server.log version binary work source
  local started sdist
  rm -f "$status"
  version=$(_llama_version)
  binary="$LLAMA_CPP_WHEELS/llama-server-$version"
  [ -x "$binary" ] && return 0
  echo "building llama.cpp's llama-server from llama-cpp-python $version's sources for the" \
    "context-window tests (the first time only: about 5 minutes; kept as $binary)" >&2
  apt_install g++ cmake ninja-build || echo "could not install g++ / cmake / ninja-build" >&2
  mkdir -p "$LLAMA_CPP_WHEELS"
  work=$(mktemp -d)
  started=$SECONDS
  : >"$log"
  if ! sdist=$(_llama_sdist "$log") || ! tar -xzf "$sdist" -C "$work" >>"$log" 2>&1; then
    rm -rf "$work"
    _llama_cpp_unavailable "downloading llama-cpp-python $version's sources failed" "$log" \
      "$status" llama-server
    return 1
  fi
  source="$work/llama_cpp_python-$version/vendor/llama.cpp"
  if [ ! -d "$source/tools/server" ]; then
    echo "no $source/tools/server" >>"$log"
    rm -rf "$work"
    _llama_cpp_unavailable "its vendored llama.cpp has no server to build" "$log" "$status" \
      llama-server
    return 1
  fi
  echo "  sources in $((SECONDS - started)) s; compiling (cmake --build, -j2)..." >&2
  # shellcheck disable=SC2086  # the flags are words
  if ! cmake -S "$source" -B "$work/build" -G Ninja $LLAMA_SERVER_CMAKE_ARGS >>"$log" 2>&1 ||
     ! timeout 40m cmake --build "$work/build" --target llama-server -j2 >>"$log" 2>&1 ||
     ! install -m 755 "$work/build/bin/llama-server" "$binary.partial" >>"$log" 2>&1; then
    rm -rf "$work" "$binary.partial"
    _llama_cpp_unavailable "building it failed after $((SECONDS - started)) s" "$log" "$status" \
      llama-server
    return 1
  fi
  mv "$binary.partial" "$binary"
  rm -rf "$work"
  # both builds made: their 77 MB of sources are not needed again
  ls "$LLAMA_CPP_WHEELS"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1 && rm -f "$sdist"
  echo "built llama-server in $((SECONDS - started)) s" >&2
}
