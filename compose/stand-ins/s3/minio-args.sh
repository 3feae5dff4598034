#!/bin/sh
# Accept MinIO's command line (`server DIR [--console-address ADDR] [--certs-dir DIR]`) and
# serve S3 on :9000: over TLS with MinIO's certificate files (public.crt, private.key) when
# --certs-dir names them, as MinIO does.
certs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --certs-dir) certs="$2"; shift 2 ;;
        --certs-dir=*) certs="${1#--certs-dir=}"; shift ;;
        *) shift ;;
    esac
done
if [ -n "$certs" ]; then
    exec moto_server -H 0.0.0.0 -p 9000 -c "$certs/public.crt" -k "$certs/private.key"
fi
exec moto_server -H 0.0.0.0 -p 9000
