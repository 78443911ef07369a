"""A Hugging Face Trainer script under ``oomguard run``: SIGKILLed, it resumes from its own checkpoint.

The script is what transformers' examples do (``TrainingArguments`` from the
command line, ``trainer.train(resume_from_checkpoint=...)``), training a tiny
GPT-2 built from a config (no download) with the real Trainer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sys
from functools import partial
from pathlib import Path

import pytest

from run_helpers import attempt_pid, events, finish, start_run, user_env, wait_for

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                reason="transformers is not installed")

SCRIPT = """
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, HfArgumentParser, Trainer, TrainerCallback
from transformers import TrainingArguments


class Begins(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        with open(Path(args.output_dir) / "begins.txt", "a") as file:  # the step each attempt starts at
            file.write(f"{state.global_step}\\n")


class Tokens(torch.utils.data.Dataset):
    def __init__(self):
        self.ids = torch.randint(0, 64, (256, 16), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


(args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses()
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                   bos_token_id=0, eos_token_id=0))
trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[Begins()])
trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
"""

STEPS = 240


def _whole_checkpoint_after(out: Path, step: int, sup: Path, attempt: int) -> int | None:
    """The pid of ``attempt`` once it has saved a whole ``checkpoint-N`` with N above ``step``."""
    for folder in out.glob("checkpoint-*"):
        try:
            saved = json.loads((folder / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            continue  # not written yet, or being written
        if saved > step:
            return attempt_pid(sup, attempt)
    return None


def test_a_trainer_script_killed_mid_run_resumes_from_its_checkpoint_and_finishes(tmp_path: Path) -> None:
    (tmp_path / "train_hf.py").write_text(SCRIPT)
    command = [sys.executable, "train_hf.py", "--output_dir", "out", "--max_steps", str(STEPS),
               "--save_steps", "20", "--save_total_limit", "2", "--per_device_train_batch_size", "4",
               "--use_cpu", "--report_to", "none", "--logging_steps", "1000", "--disable_tqdm", "true"]
    out, sup = tmp_path / "out", tmp_path / "sup"
    process = start_run(["--run-dir", "sup", "--", *command], tmp_path,
                        user_env(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"))
    pid = wait_for(partial(_whole_checkpoint_after, out, 0, sup, 1), process, "a checkpoint")
    os.kill(pid, signal.SIGKILL)

    output = finish(process, tmp_path).replace("\n", "")
    [restart] = events(sup, "restart")
    resumed = int(restart["resume_from"].removeprefix("out/checkpoint-"))
    assert 20 <= resumed < STEPS and resumed % 20 == 0
    assert restart["argv"] == [*command, "--resume_from_checkpoint", f"out/checkpoint-{resumed}"]
    assert (out / "begins.txt").read_text().split() == ["0", str(resumed)]  # the second attempt began there
    final = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert final["global_step"] == STEPS
    assert re.search(rf"restarting( in [0-9.]+s)?: huggingface preset resumes from out/checkpoint-{resumed}",
                     output)
