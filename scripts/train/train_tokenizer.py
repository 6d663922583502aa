#!/usr/bin/env python3
"""Trains the byte-level BPE tokenizer on the mixed corpus and writes a Hugging Face tokenizer folder.

    python3 scripts/train/train_tokenizer.py --corpus data/corpus --out models

Byte-level (GPT-2 style: ByteLevel pre-tokenizer with its regex, ByteLevel decoder) with all 256
byte symbols in the initial alphabet, so any text round-trips and no input maps to <unk>. Special
tokens take Llama-2's ids and names: <unk>=0, <s>=1, </s>=2. The post-processor prepends <s>, so
tokenizer.json alone says what tokenizer_config.json's add_bos_token says.

Writes tokenizer.json and tokenizer_config.json (with a minimal chat template); pretrain.py adds the
model files and generation_config.json beside them.
"""

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from corpus import corpus_domains, read_documents

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]
BOS, EOS, UNK = "<s>", "</s>", "<unk>"

# Not a chat model; the template only gives clients of the OpenAI-style endpoint a stable prompt shape.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def training_texts(corpus: Path, bytes_per_domain: int) -> list[str]:
    # Equal bytes from every domain, so the vocabulary isn't dominated by the largest one.
    texts = []
    for domain in corpus_domains(corpus):
        taken = 0
        for doc in read_documents(corpus / domain / "train.txt"):
            if taken >= bytes_per_domain:
                break
            texts.append(doc)
            taken += len(doc.encode())
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("models"))
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--bytes-per-domain", type=int, default=2_400_000)
    parser.add_argument("--model-max-length", type=int, default=1024)
    parser.add_argument("--tiny", action="store_true", help="small vocabulary on a corpus slice, for tests")
    args = parser.parse_args()
    if args.tiny:
        args.vocab_size, args.bytes_per_domain = 1024, 200_000

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_texts(args.corpus, args.bytes_per_domain), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )

    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(args.out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": args.model_max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (args.out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    # Round-trip check on one document per domain: byte-level BPE must reproduce the text exactly.
    for domain in corpus_domains(args.corpus):
        doc = read_documents(args.corpus / domain / "valid.txt")[0]
        ids = tokenizer.encode(doc).ids
        assert ids[0] == bos_id and tokenizer.decode(ids, skip_special_tokens=True) == doc, domain
        print(f"{domain:10s} {len(doc.encode()) / (len(ids) - 1):.2f} bytes/token")
    print(f"wrote {args.out}/tokenizer.json (vocab {tokenizer.get_vocab_size()})")


if __name__ == "__main__":
    main()
