# shellcheck shell=sh disable=SC2034,SC2154  # sets variables for, and reads $here of, its caller
# common.sh — sourced by tempest-smoke.sh and rally-aio.sh (POSIX sh, set -eu).
#
# validation_setup TOOL VENV OUT... : the checks and set-up both runtime scripts share.
#   Checks the one OUT argument, the runtime environment (ENVBUILD_PORT_KEYSTONE,
#   ENVBUILD_RUN, ENVBUILD_SECRET_ADMIN_PASSWORD), that VENV (a folder of the machine
#   root) has a python, and that keystone answers with the admin password; exit 2 with
#   one line on stderr if not. Then sets, for the caller:
#     root   the machine root (also the working directory)
#     out    OUT/TOOL, absolute, emptied
#     port   keystone's public port (NGINX);  py: VENV's python
#     priv   a private dir under $ENVBUILD_RUN for whatever holds the password
#            (config, HOME, databases), deleted at exit
# validation_check_leak : exit status 1 and a message if the admin password appears in
#   anything under $out.
# The results helper (result.py) and keystone-leftovers.py sit next to this file.

validation_setup() {
    _tool=$1 _venv=$2
    shift 2
    [ $# -eq 1 ] || { echo "usage: ${0##*/} OUT" >&2; exit 2; }
    mkdir -p "$1"
    out=$(cd "$1" && pwd)/$_tool
    root=${ENVBUILD_ROOT:-$(pwd)}
    cd "$root" || exit 2
    port=${ENVBUILD_PORT_KEYSTONE:?}
    : "${ENVBUILD_RUN:?}" "${ENVBUILD_SECRET_ADMIN_PASSWORD:?}"
    py=$root/$_venv/bin/python
    [ -x "$py" ] || { echo "${0##*/}: no $_venv in $root ($_tool stage)" >&2; exit 2; }
    # Preflight: keystone answers and the admin password is right (one line if not).
    "$py" "$here/keystone-leftovers.py" --check || exit 2
    rm -rf "$out"
    mkdir -p "$out" "$ENVBUILD_RUN"
    priv=$(mktemp -d "$ENVBUILD_RUN/$_tool.XXXXXX")
    trap 'rm -rf "$priv"' EXIT
    trap 'exit 130' INT TERM
}

validation_check_leak() {
    printf '%s\n' "$ENVBUILD_SECRET_ADMIN_PASSWORD" >"$priv/pw"
    if grep -rqF -f "$priv/pw" "$out"; then
        echo "${0##*/}: the admin password appears in $out" >&2
        return 1
    fi
}
