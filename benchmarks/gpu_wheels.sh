#!/usr/bin/env bash
# Wheels the GPU machines' image lacks (docs/benchmarks.md, "GPU"), for Python 3.12 on x86-64, into ./.whl of the
# repo root; benchmarks/gpu_all.sh installs them there when `import pydantic, soxr, soundfile` fails.
# Run once here (it needs the package index); then carry .whl with the device call.
set -eu
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 \
  soxr==1.1.0 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
ls -1 .whl
