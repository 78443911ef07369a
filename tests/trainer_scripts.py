"""Tiny training scripts for the real Hugging Face and Lightning trainers, with oomguard's callback.

Each script is a file a test writes and runs in a real process. Models are
built from configs (no downloads); ``--leak`` keeps a metric with its graph
every step; ``--min_available`` is the callback's pressure threshold.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HUGGING_FACE = """
import argparse, torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from oomguard.integrations.transformers import OomguardCallback

parser = argparse.ArgumentParser()
parser.add_argument("--output_dir")
parser.add_argument("--max_steps", type=int)
parser.add_argument("--save_steps", type=int, default=1000)
parser.add_argument("--leak", action="store_true")
parser.add_argument("--min_available", default="auto")
parser.add_argument("--resume_from_checkpoint", default=None)
args = parser.parse_args()
torch.manual_seed(0)
config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=32, num_labels=2)
model = BertForSequenceClassification(config)


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 100000

    def __getitem__(self, index):
        ids = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": int(ids[0]) % 2}


kept = []


class Leaky(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        loss = super().compute_loss(model, inputs, return_outputs, **kwargs)
        if args.leak:
            kept.append(model(**inputs).loss)  # a metric kept with its graph, every step
        return loss


training = TrainingArguments(output_dir=args.output_dir, max_steps=args.max_steps,
                             per_device_train_batch_size=16, save_steps=args.save_steps, save_total_limit=2,
                             logging_steps=1000, report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
                             disable_tqdm=True)
trainer = Leaky(model=model, args=training, train_dataset=Data(),
                callbacks=[OomguardCallback(min_available=args.min_available)])
trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
print("trained to step", trainer.state.global_step)
"""

LIGHTNING = """
import argparse, torch
import lightning.pytorch as L
from torch.utils.data import DataLoader, TensorDataset
from oomguard.integrations.lightning import OomguardCallback

parser = argparse.ArgumentParser()
parser.add_argument("--root")
parser.add_argument("--max_steps", type=int)
parser.add_argument("--leak", action="store_true")
parser.add_argument("--min_available", default="auto")
parser.add_argument("--ckpt_path", default=None)
args = parser.parse_args()
kept = []


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))

    def training_step(self, batch, index):
        x, y = batch
        if args.leak:
            kept.append(torch.nn.functional.mse_loss(self.net(x), y))  # a metric kept with its graph
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


L.seed_everything(0)
x = torch.randn(65536, 64, generator=torch.Generator().manual_seed(0))
data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=64)
trainer = L.Trainer(max_steps=args.max_steps, default_root_dir=args.root, accelerator="cpu", devices=1,
                    logger=False, enable_progress_bar=False, enable_model_summary=False,
                    callbacks=[OomguardCallback(min_available=args.min_available)])
trainer.fit(Model(), data, ckpt_path=args.ckpt_path)
print("trained to step", trainer.global_step)
"""


#: A plain LightningCLI script (``fit`` takes ``--ckpt_path``); each epoch says which attempt trained it.
LIGHTNING_CLI = """
import os
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI
from torch.utils.data import DataLoader, TensorDataset


class Data(LightningDataModule):
    def __init__(self, batch_size: int = 8):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        x = torch.randn(2048, 32, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=self.batch_size)


class Model(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(32, 1)

    def training_step(self, batch, index):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_train_epoch_start(self):  # which attempt trained which epoch
        with open(Path(self.trainer.default_root_dir) / "epochs.txt", "a") as file:
            file.write(f"{os.environ['OOMGUARD_ATTEMPT']} {self.current_epoch}\\n")


LightningCLI(Model, Data)
"""


def run_script(source: str, args: list[str], cwd: Path, env: dict[str, str] | None = None,
               preexec: object = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to ``cwd/train.py`` and run it with ``args`` (offline, this interpreter)."""
    script = cwd / "train.py"
    script.write_text(source)
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)  # type: ignore[arg-type]
