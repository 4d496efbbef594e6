# Source this to build ecomap against the project-local PyTorch wheel:
#   . ./env.sh
# scripts/setup.sh creates .venv with torch==2.13.0 (what tch 0.26 expects).
ECOMAP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export VIRTUAL_ENV="$ECOMAP_ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
