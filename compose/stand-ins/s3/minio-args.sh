#!/bin/sh
# Accept MinIO's command line (`server DIR --console-address ADDR`) and serve S3 on :9000.
exec moto_server -H 0.0.0.0 -p 9000
