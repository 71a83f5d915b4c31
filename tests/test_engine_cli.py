"""Bad engine settings through the installed `alignlimits` script: exit 2, one line, no traceback.

An unknown engine, vLLM missing (hidden from a real process by ``sys.modules['vllm'] = None``, which is what
an uninstalled package looks like to ``importlib``) and a KV cache larger than the machine's memory (a real
vLLM start that fails in vLLM's own process; its traceback must stay out of the terminal).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cli_helpers import CLI

run = CLI.run
assert_clean_error = CLI.assert_clean_error


@pytest.mark.parametrize("command", [
    ["sample", "--task", "exact", "--out", "{tmp}/s"],
    ["run", "exact", "--out", "{tmp}/r"],
    ["evaluate", "{tmp}/e", "--task", "exact", "--policy", "p={tmp}"],
])
def test_unknown_engine(command, tmp_path):
    args = [a.format(tmp=tmp_path) for a in command]
    assert_clean_error(run(*args, "--engine", "vlm"), "unknown --engine 'vlm'", "hf, vllm, auto")


def test_vllm_missing(tmp_path):
    hide_vllm = ("import sys; sys.modules['vllm'] = None; from alignlimits.cli import main; "
                 "sys.argv = ['alignlimits', *sys.argv[1:]]; main()")
    for args in (["sample", "--task", "exact", "--engine", "vllm", "--out", tmp_path / "s"],
                 ["evaluate", tmp_path / "e", "--task", "exact", "--policy", f"p={tmp_path}", "--engine", "vllm"]):
        proc = subprocess.run([sys.executable, "-c", hide_vllm, *map(str, args)], capture_output=True, text=True)
        assert_clean_error(proc, "--engine vllm needs vLLM", "make setup", "--engine hf")


@pytest.mark.model
@pytest.mark.slow
def test_kv_cache_larger_than_memory(tmp_path):
    """vLLM refuses the cache in its worker process; the user reads that cause and the fix in one line."""
    too_much = str(2 * psutil.virtual_memory().total // 2**30 + 1)
    proc = run("sample", "--task", "summarization", "--engine", "vllm", "--limit-prompts", "1", "--n", "2",
               "--max-new-tokens", "4", "--quiet", "--out", tmp_path / "s",
               env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": too_much})
    assert_clean_error(proc, "vLLM could not start", f"({too_much}.0 GiB)", "set VLLM_CPU_KVCACHE_SPACE",
                       "free memory")
    log = Path(re.search(r"vLLM's log: (\S+?)\)", proc.stderr).group(1))
    assert "Traceback" in log.read_text()  # vLLM's own account went to its log, not to the terminal
    log.unlink()
