"""``redbatch demo --stream``: words of the bigram generator printed as they come."""

from __future__ import annotations

import subprocess
import sys

from helpers import subprocess_env


def test_demo_stream_prints_the_texts_and_its_figures() -> None:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("REDBATCH_")}
    done = subprocess.run(
        [sys.executable, "-m", "redbatch", "demo", "--stream", "--workers", "1", "--requests", "3"],
        check=False, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Once upon a time the fox ")
    assert "3 streams" in done.stdout  # the table title (rich may wrap it)
    assert "chunks per second" in done.stdout
    # The other two prompts, each with its generated text.
    assert "The tortoise said " in done.stdout and "A lion " in done.stdout
