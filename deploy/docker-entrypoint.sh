#!/bin/sh
# Entrypoint of the hub image: secrets come in as files, never as image layers.
#
# For every variable AUTORESEARCH_<NAME>_FILE or PG<NAME>_FILE in the environment (compose secrets:
# AUTORESEARCH_HUB_ADMIN_TOKEN_FILE=/run/secrets/hub_admin_token, PGPASSWORD_FILE=...), export
# <NAME> with the file's content (trailing newlines dropped) and drop the _FILE variable, as the
# official postgres image does for POSTGRES_PASSWORD_FILE. Setting both NAME and NAME_FILE is an
# error. Then exec the command (default: `autoresearch hub serve`).
set -eu

for file_var in $(env | sed -n 's/^\(AUTORESEARCH_[A-Z0-9_]*_FILE\|PG[A-Z]*_FILE\)=.*/\1/p'); do
    var=${file_var%_FILE}
    eval "path=\${$file_var}"
    eval "current=\${$var:-}"
    if [ -n "$current" ]; then
        echo "docker-entrypoint: both $var and $file_var are set; use one" >&2
        exit 64
    fi
    if [ ! -r "$path" ]; then
        echo "docker-entrypoint: $file_var=$path is not a readable file (uid $(id -u))" >&2
        exit 66
    fi
    value=$(cat "$path")
    export "$var=$value"
    unset "$file_var"
done

exec "$@"
