#!/bin/sh
# Build the scheduler Lambda's zip (handler scheduler.lambda_handler.handler, python3.11):
# castway's `castway` and `scheduler` packages plus the libraries one tick imports. No libav:
# a tick never transcodes. boto3 comes with the Lambda runtime.
#
#   deploy/aws/package_lambda.sh [OUT.zip]      (default dist/castway-scheduler.zip)
#   aws s3 cp dist/castway-scheduler.zip s3://BUCKET/castway-scheduler-VERSION.zip
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/dist/castway-scheduler.zip}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac
python=${PYTHON:-python3}
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT INT TERM

"$python" -m pip install --quiet --target "$build" --platform manylinux2014_x86_64 \
    --implementation cp --python-version 3.11 --only-binary=:all: \
    "pydantic>=2.6" "pydantic-settings>=2.2" "redis>=5.0" "prometheus-client>=0.20"
cp -R "$root/castway" "$root/scheduler" "$build/"
find "$build" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$(dirname "$out")"
rm -f "$out"
(cd "$build" && "$python" -m zipfile -c "$out" ./*)
echo "$out"
