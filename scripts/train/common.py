"""Helpers shared by the training scripts: device choice, tokenized corpus, batches, the training loop
and held-out loss. Plain PyTorch and the stable core of transformers (model(input_ids, labels).loss)
so the scripts run unchanged across transformers/PEFT versions."""

import contextlib
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from corpus import corpus_domains, read_documents


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    # bf16 matmuls on the GPU with fp32 master weights; the CPU trains in fp32 (its bf16 is slow).
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_tokenizer(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))


def encode_documents(tokenizer: Tokenizer, documents: list[str]) -> torch.Tensor:
    """One packed stream: each document as <s> text </s> (the post-processor adds <s>)."""
    eos = tokenizer.token_to_id("</s>")
    ids = []
    for encoding in tokenizer.encode_batch(documents):
        ids.extend(encoding.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def take_bytes(documents: list[str], max_bytes: int | None) -> list[str]:
    """The leading documents up to max_bytes (all when None): the slice a --tiny run trains on."""
    if max_bytes is None:
        return documents
    taken, total = [], 0
    for doc in documents:
        if total >= max_bytes:
            break
        taken.append(doc)
        total += len(doc.encode())
    return taken


def load_split(corpus: Path, tokenizer: Tokenizer, split: str, device: torch.device,
               max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Every domain's split, tokenized once and kept on the device so batching never waits on the CPU."""
    return {
        domain: encode_documents(tokenizer, take_bytes(read_documents(corpus / domain / f"{split}.txt"), max_bytes)).to(device)
        for domain in corpus_domains(corpus)
    }


def random_windows(tokens: torch.Tensor, rows: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """rows windows of length tokens at random offsets of a packed stream: [rows, length]."""
    starts = torch.randint(0, len(tokens) - length + 1, (rows, 1), generator=generator, device=generator.device)
    return tokens[starts + torch.arange(length, device=tokens.device)]


def train(model, parameters: list[torch.nn.Parameter], next_batch, *, steps: int, lr: float, warmup: int,
          weight_decay: float, device: torch.device, max_minutes: float | None = None, log_every: int = 50,
          eval_every: int = 0, evaluate=None) -> dict:
    """AdamW with linear warmup and cosine decay to 10% of lr; gradient norm clipped at 1.

    next_batch() returns [rows, length] token ids; the model predicts each next token. Stops early,
    with a message, when max_minutes pass. evaluate() runs every eval_every steps when given."""
    decay = [p for p in parameters if p.ndim >= 2]  # matrices decay; norms and biases don't
    no_decay = [p for p in parameters if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda",
    )

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    start, tokens_seen, step = time.time(), 0, 0
    for step in range(steps):
        batch = next_batch()
        with autocast(device):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens_seen += batch.numel()

        out_of_time = max_minutes is not None and time.time() - start > max_minutes * 60
        if step == 0 or (step + 1) % log_every == 0 or step == steps - 1 or out_of_time:
            elapsed = time.time() - start
            print(f"step {step + 1:5d}/{steps}  loss {loss.item():.4f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                  f"{tokens_seen / elapsed:,.0f} tok/s  {elapsed:.0f}s", flush=True)
        if evaluate is not None and eval_every and (step + 1) % eval_every == 0:
            evaluate()
            model.train()
        if out_of_time:
            print(f"stopping early: --max-minutes {max_minutes} reached after {step + 1} of {steps} steps")
            break
    return {"steps": step + 1, "tokens": tokens_seen, "seconds": round(time.time() - start, 1),
            "final_train_loss": round(loss.item(), 4)}


@torch.no_grad()
def heldout_loss(model, tokens: torch.Tensor, seq_len: int, max_windows: int = 256, batch_rows: int = 32) -> float:
    """Mean next-token loss (nats) over non-overlapping seq_len windows of a held-out stream, in fp32."""
    model.eval()
    windows = min(max_windows, (len(tokens) - 1) // seq_len)
    data = tokens[: windows * seq_len].view(windows, seq_len)
    total, count = 0.0, 0
    for i in range(0, windows, batch_rows):
        batch = data[i : i + batch_rows]
        logits = model(input_ids=batch).logits.float()
        total += F.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
    return total / count
