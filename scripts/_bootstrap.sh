# Sourced by scripts/*: make sure .venv exists and holds what the lock files pin.
#   source scripts/_bootstrap.sh runtime   the service only (scripts/serve)
#   source scripts/_bootstrap.sh dev       the service and the dev tools (scripts/test, CI)
# Versions come from requirements/runtime.txt or requirements/dev.txt (exact pins with hashes,
# made by scripts/lock from pyproject.toml); a profile is re-installed only when its lock file
# or pyproject.toml changed since its last install (a stamp file per profile).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GRSAI_RELAY_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
PROFILE="${1:-dev}"
case "$PROFILE" in
  runtime | dev) ;;
  *) echo "bootstrap: unknown profile '$PROFILE' (runtime or dev)" >&2; return 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating virtualenv in $VENV" >&2
  "$PY" -m venv "$VENV"
fi
fingerprint() { cat "$ROOT/requirements/$1.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1; }
stamp="$VENV/.grsai-relay-$PROFILE"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$(fingerprint "$PROFILE")" ]; then
  echo "bootstrap: installing the $PROFILE set pinned in requirements/$PROFILE.txt into $VENV" >&2
  pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  "${pip[@]}" --require-hashes --no-deps -r "$ROOT/requirements/$PROFILE.txt"
  "${pip[@]}" --no-deps -e "$ROOT"
  if [ "$PROFILE" = dev ]; then
    fingerprint runtime > "$VENV/.grsai-relay-runtime"  # dev.txt pins the runtime's versions too
  else
    rm -f "$VENV/.grsai-relay-dev"  # shared packages may have moved: dev checks itself again
  fi
  fingerprint "$PROFILE" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
