#!/bin/sh
# Check one nginx server block before it is put in place.
# Usage: gdl-nginx-check-site FILE   (Salt's check_cmd passes the new content's file)
# nginx -t checks whole configurations, so FILE is included in a minimal one.
set -eu
site="$1"
conf="$(mktemp /tmp/gdl-nginx-check.XXXXXX)"
# Not exec: the trap must run once nginx is done, or every check leaves its files.
trap 'rm -f "$conf" "$conf.pid"' EXIT
cat >"$conf" <<CONF
pid $conf.pid;
events {}
http {
    include /etc/nginx/mime.types;
    include $site;
}
CONF
nginx -q -t -c "$conf"
