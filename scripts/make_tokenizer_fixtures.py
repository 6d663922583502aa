#!/usr/bin/env python3
"""Make the small tokenizer fixtures the Swift PunicaTokenizer is tested against.

WHAT IT MAKES (under Tests/Fixtures/tokenizers/, each directory a Hugging Face tokenizer directory of
tokenizer.json + tokenizer_config.json + generation_config.json + golden.json, each file under 50 KB):

  Two BPE models are trained with the `tokenizers` library on CORPUS below (deterministic), then saved in
  the pipelines real Llama-family checkpoints use:

  bytelevel/                       Llama-3 style. Split pre-tokenizer with the Llama-3 regex +
                                   ByteLevel(add_prefix_space=False, use_regex=False), ByteLevel decoder,
                                   ignore_merges, TemplateProcessing that adds <|begin_of_text|>.
                                   600 tokens + added tokens: specials <|begin_of_text|> <|end_of_text|>
                                   <|eot_id|>; non-special "<|tool|>" (lstrip, rstrip) and "gonna"
                                   (single_word). tokenizer_config: bos/eos as strings, no add_bos_token,
                                   clean_up_tokenization_spaces true (transformers ignores it for BPE).
                                   generation_config: eos_token_id a list.
  bytelevel-gpt2/                  Same model, GPT-2 style pipeline: ByteLevel pre-tokenizer
                                   (add_prefix_space=True, use_regex=True: the GPT-2 regex), ByteLevel
                                   post-processor only (no BOS), merges written as "a b" strings.
  sentencepiece/                   Llama-2 / TinyLlama style. <unk> <s> </s> at ids 0-2, the 256 <0xNN>
                                   byte-fallback tokens at 3-258, BPE pieces with "▁" for spaces, unk <unk>,
                                   fuse_unk, byte_fallback. Normalizer Sequence[Prepend("▁"), Replace(" ",
                                   "▁")], no pre-tokenizer (as older transformers wrote it), decoder
                                   Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)],
                                   TemplateProcessing that adds <s>. Added tokens: special "<mask>"
                                   (lstrip) and non-special normalized "Punica". tokenizer_config: tokens
                                   as {"content": ...} objects, add_bos_token true, add_eos_token false.
  sentencepiece-metaspace/         Same model, no normalizer, Metaspace pre-tokenizer (prepend_scheme
                                   "first", split false), as current transformers writes Llama tokenizers.
  sentencepiece-metaspace-split/   Same model, Metaspace pre-tokenizer (prepend_scheme "always", split
                                   true) and a Metaspace decoder (byte tokens stay literal "<0xNN>" text);
                                   no post-processor, so add_bos_token/add_eos_token are not in the config.
  sentencepiece-unk/               Same as sentencepiece/ but byte_fallback off, so characters outside the
                                   vocabulary become <unk> (runs fused: fuse_unk), and the post-processor
                                   adds </s> as well as <s> (add_eos_token true in the config).

  bytelevel-smollm2/               Same model, pipeline as transformers writes SmolLM2's tokenizer.json: Sequence[Digits
                                   (individual_digits), ByteLevel(add_prefix_space=False, use_regex=True)],
                                   model fields continuing_subword_prefix "" and end_of_word_suffix "" (meaning
                                   none), byte_fallback false, unk_token null, ignore_merges false.
  sentencepiece-nested/            Same as sentencepiece/ with the normalizer written as nested Sequences
                                   (Sequence[Sequence[Prepend("▁")], Sequence[], Replace(" ", "▁")]).

  Two more BPE models, trained the same way on CORPUS, in the pipelines of newer families:

  bytelevel-qwen2/                 Qwen2 / Qwen2.5 / Qwen3 style. NFC normalizer, Split pre-tokenizer with Qwen2's
                                   regex (Llama 3's with one digit per word) + ByteLevel(add_prefix_space=False,
                                   use_regex=False), ByteLevel post-processor only (no BOS), ByteLevel decoder,
                                   model fields continuing_subword_prefix "" and end_of_word_suffix "", byte_fallback
                                   false, ignore_merges false. Specials <|endoftext|> <|im_start|> <|im_end|>;
                                   tokenizer_config: bos_token null, eos <|im_end|>, pad <|endoftext|>.
  sentencepiece-gemma/             Gemma style. <pad> <eos> <bos> <unk> <mask> at ids 0-4, <start_of_turn> <end_of_turn>,
                                   then the 256 <0xNN> byte-fallback tokens and BPE pieces with "▁" for spaces but no
                                   dummy prefix: normalizer Replace(" ", "▁") only, no pre-tokenizer, decoder
                                   Sequence[Replace("▁", " "), ByteFallback, Fuse] (no Strip), TemplateProcessing
                                   that adds <bos>; unk <unk>, fuse_unk, byte_fallback.
  sentencepiece-gemma3/            Gemma 3 style: as sentencepiece-gemma/ plus the pre-tokenizer Gemma 3's tokenizer.json
                                   has, Split(" ", "merged_with_previous") (a no-op after the normalizer's Replace).

  golden.json: {"versions": {...}, "cases": [{"text", "ids", "decoded", "decoded_with_specials"}, ...]}
  for every string in TEXTS: ids = tokenizer(text)["input_ids"] (special tokens added as transformers
  adds them), decoded = tokenizer.decode(ids, skip_special_tokens=True), decoded_with_specials likewise
  with skip_special_tokens=False. The tokenizer is transformers' AutoTokenizer loaded back from the
  written directory, and its ids are checked against the `tokenizers` library's own Tokenizer.

  split-words.json: {"versions", "texts", "cases": [{"pre_tokenizer", "words"}, ...]}: the Split pre-tokenizer
  with each pattern of SPLIT_PATTERNS, each behavior and invert false/true (and one Sequence with Metaspace), and
  for each of SPLIT_TEXTS the words the library's pre_tokenize_str returns.

RUN IT (a few seconds, from anywhere):
    pip install tokenizers transformers
    python3 scripts/make_tokenizer_fixtures.py        # rewrites Tests/Fixtures/tokenizers/*

LAST RUN WITH: python 3.11.7, tokenizers 0.23.3, transformers 5.24.0 (also written into each golden.json).
"""

import json
import os
import platform

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers
from transformers import AutoTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_ROOT = os.path.join(REPO, "Tests", "Fixtures", "tokenizers")

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

CORPUS = """\
The quick brown fox jumps over the lazy dog. It's the fox's third jump today, and they're all tired;
we've seen it before, I'm sure you'll agree, and she'd say the same. THE DOG DIDN'T MOVE!
Serving many LoRA fine-tunes of one base model in a single batch is what Punica does: every request in
the batch shares the base matrix multiply, and each adapter adds its own low-rank update.
In 2023, the team measured 12 times the throughput at 1234 requests per second (p99 latency: 56.78 ms).
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1,000,000 -17 +5 50% $19.99 #1 @home

def tokenize(text: str) -> list[int]:
    \"\"\"Split text into words, then words into pieces.\"\"\"
    words = [w for w in text.split() if w]
    return [vocab.get(w, UNK) for w in words]

for (int i = 0; i < n; ++i) {
    if (x[i] != 0 && y[i] >= 1) { total += x[i] * y[i]; }
}

struct Segment { let start: Int; let end: Int; var adapter: String? }
let rows = segments.map { $0.end - $0.start }   // -> [Int]
if let first = rows.first, first > 0 { print("first segment has \\(first) rows") }

{"model": "llama", "layers": 32, "heads": [32, 8], "rope_theta": 500000.0, "tie": false}
<html><body><p class="note">Hello &amp; welcome!</p></body></html>
SELECT name, COUNT(*) FROM requests WHERE adapter IS NOT NULL GROUP BY name;

Voilà un café crème à Paris; l'été dernier, nous étions à Montréal. Ça va très bien, merci.
Größe, Straße, Übermäßig schön. ¿Dónde está la biblioteca? ¡Olé! Señor Müller aß Smørrebrød.
Привет, мир! Как дела? Всё хорошо. Ελληνικά: καλημέρα κόσμε.
日本語のテキストです。東京は大きな都市です。中文：你好，世界！今天天气很好。
emoji: 😀 🎉 👍 ❤️ ✨ 🚀 — and math: α + β = γ, ∑ x² ≤ ∞, √2 ≈ 1.414, 3 × 4 ÷ 2 = 6.
Tabs\tand\tnewlines\n are whitespace; so are  double  spaces   and trailing spaces   
Windows line endings\r\nlook like this.\r\nOK?
"""

# Strings whose encodings and decodings are recorded. Some use characters absent from CORPUS, to exercise
# byte fallback (sentencepiece) and rare byte merges (bytelevel).
TEXTS = [
    "",
    " ",
    "   ",
    "Hello world",
    " Hello world",
    "  leading spaces and trailing ones  ",
    "multiple    spaces\t\ttabs",
    "a\nb\n\nc\n\n\n",
    "line one\r\nline two\r\n",
    " \n \t\n  x \n",
    "1234567 and 12 and 3.14159 and 1,000,000",
    "٣٤٥٦ Ⅻ ½ ²",
    "It's I'M they'll WE'VE she'D you're don't 'S 'll ’s",
    "!!!???... --> ::= {[()]} ...\n\n",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "Voilà un café crème, Größe, Smørrebrød, señor",
    "e\u0301 a\u0308\u0301 Z\u0351\u0300\u0317a\u0352\u0353lgo",
    "日本語のテキスト、中文你好",
    "한국어 텍스트입니다",
    "ᚠᛇᚻ᛫ᛒᛦᚦ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀",
    "emoji 😀🎉 👍🏽 ❤️",
    "family 👩\u200d👩\u200d👧\u200d👦 and rainbow 🏳️\u200d🌈 and flag 🇺🇸",
    "nbsp\u00a0here, em\u2003space, ideographic\u3000space, nel\u0085x, zwsp\u200bx, ls\u2028x",
    "tab\u000bvt\u000cff",
    "<|begin_of_text|>Hello<|eot_id|>",
    "Say <|eot_id|> then <|end_of_text|><|end_of_text|>",
    "<s>Hello</s>",
    " <s> spaced </s> ",
    "<unk> and <mask> here",
    "call <|tool|>  now",
    "I'm gonna go, gonnabe not, (gonna)",
    "I like Punica a lot. Punica!",
    "The quick brown fox jumps over the lazy dog.",
    "Serving many LoRA fine-tunes of one base model in a single batch.",
    "SELECT name FROM t WHERE x IS NOT NULL;",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "\u0000\u0001\u007f control",
    "trailing newline\n",
    "    indented code block",
    "x" * 40 + " " + "ab" * 20,
    # Canonically equivalent spellings that NFC changes: decomposed accents, a mark reordered before composing,
    # Hangul jamo (L V T, and an LV syllable + T), the Angstrom and Kelvin signs, a CJK compatibility ideograph;
    # the ligature ﬁ and fullwidth digits stay (NFKC would change them).
    "cafe\u0301 na\u0131\u0308ve re\u0301sume\u0301 A\u030a o\u0302\u0301",
    "D\u0307\u0323 q\u0307\u0323 \u1e0a\u0323",
    "\u1100\u1161\u11a8 \uac00\u11a8 \u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165",
    "\u212b \u212a \uf900 \ufb01 \uff11\uff12\uff13 2\u2075",
]


def train_bytelevel_model(pattern=LLAMA3_PATTERN, normalizer=None):
    """Returns (vocab, merges) of a byte-level BPE trained on CORPUS with the split `pattern`."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], model["merges"]


def train_sentencepiece_model(specials=("<unk>", "<s>", "</s>"), prepend_scheme="always"):
    """Returns (vocab, merges) in SentencePiece layout: `specials` (Llama 2: <unk> <s> </s>), the 256 <0xNN>
    tokens, then BPE pieces ("▁" before each word but the first when `prepend_scheme` is "never", as Gemma)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=True)
    trainer = trainers.BpeTrainer(vocab_size=341, show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = {token: i for i, token in enumerate(specials)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece, _ in sorted(model["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    return vocab, model["merges"]


def qwen2_tokenizer(vocab, merges):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges], ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tok


def qwen2_configs(tok):
    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 32768,
    }
    end_of_text, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    return tokenizer_config, {"bos_token_id": end_of_text, "eos_token_id": [im_end, end_of_text]}


def gemma_tokenizer(vocab, merges, gemma3=False):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges], unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    if gemma3:
        tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(GEMMA_SPECIALS)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B:1",
                                                       special_tokens=[("<bos>", 2)])
    return tok


def gemma_configs():
    tokenizer_config = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
    }
    return tokenizer_config, {"bos_token_id": 2, "eos_token_id": [1, 6], "pad_token_id": 0}


GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]


def bytelevel_tokenizer(vocab, merges, gpt2, smollm2=False):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges], ignore_merges=not gpt2 and not smollm2))
    if smollm2:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    elif gpt2:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    tok.add_tokens([AddedToken("<|tool|>", lstrip=True, rstrip=True, normalized=False, special=False),
                    AddedToken("gonna", single_word=True, normalized=False, special=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    if gpt2 or smollm2:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
    return tok


def sentencepiece_tokenizer(vocab, merges, style):
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges], unk_token="<unk>",
                               fuse_unk=True, byte_fallback=style != "unk"))
    llama2_decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                        decoders.Strip(content=" ", left=1, right=0)])
    if style in ("legacy", "unk", "nested"):
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = llama2_decoder
    elif style == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = llama2_decoder
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.add_tokens([AddedToken("<mask>", lstrip=True, normalized=False, special=True),
                    AddedToken("Punica", normalized=True, special=False)])
    if style == "unk":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> <s> $B:1 </s>:1",
                                                           special_tokens=[("<s>", 1), ("</s>", 2)])
    elif style != "split":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                           special_tokens=[("<s>", 1)])
    return tok


LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>"
    "\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
LLAMA2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}")


def token_object(content):
    """A special token as older tokenizer_config.json files write it."""
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False,
            "rstrip": False, "single_word": False}


def bytelevel_configs(tok, gpt2):
    eos = "<|end_of_text|>" if gpt2 else "<|eot_id|>"
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": eos,
        "clean_up_tokenization_spaces": True,
        "model_max_length": 8192,
        "chat_template": LLAMA3_CHAT_TEMPLATE,
    }
    end_of_text, eot = tok.token_to_id("<|end_of_text|>"), tok.token_to_id("<|eot_id|>")
    generation_config = {"bos_token_id": tok.token_to_id("<|begin_of_text|>"),
                         "eos_token_id": end_of_text if gpt2 else [end_of_text, eot]}
    return tokenizer_config, generation_config


def sentencepiece_configs(style):
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_object("<s>"),
        "eos_token": token_object("</s>"),
        "unk_token": token_object("<unk>"),
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": style in ("legacy", "unk"),
        "model_max_length": 2048,
        "chat_template": LLAMA2_CHAT_TEMPLATE,
    }
    if style != "split":
        tokenizer_config.update(add_bos_token=True, add_eos_token=style == "unk")
    return tokenizer_config, {"bos_token_id": 1, "eos_token_id": 2}


def write_json(path, value, indent=2):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def write_fixture(name, tok, tokenizer_config, generation_config, legacy_merges=False, model_fields=None, normalizer=None):
    """`model_fields` and `normalizer` are written into tokenizer.json as given (the library would write them in
    another form); the golden ids come from the library loading that file back."""
    out = os.path.join(OUT_ROOT, name)
    os.makedirs(out, exist_ok=True)
    tokenizer_json = json.loads(tok.to_str())
    tokenizer_json["model"].update(model_fields or {})
    if normalizer:
        tokenizer_json["normalizer"] = normalizer
    if legacy_merges:
        tokenizer_json["model"]["merges"] = [" ".join(pair) for pair in tokenizer_json["model"]["merges"]]
    write_json(os.path.join(out, "tokenizer.json"), tokenizer_json, indent=None)
    write_json(os.path.join(out, "tokenizer_config.json"), tokenizer_config)
    write_json(os.path.join(out, "generation_config.json"), generation_config)

    hf = AutoTokenizer.from_pretrained(out)
    reference = Tokenizer.from_file(os.path.join(out, "tokenizer.json"))
    cases = []
    for text in TEXTS:
        ids = hf(text)["input_ids"]
        assert ids == reference.encode(text).ids, (name, text)
        cases.append({"text": text, "ids": ids,
                      "decoded": hf.decode(ids, skip_special_tokens=True),
                      "decoded_with_specials": hf.decode(ids, skip_special_tokens=False)})
    versions = {"python": platform.python_version(), "tokenizers": tokenizers.__version__,
                "transformers": transformers.__version__}
    write_json(os.path.join(out, "golden.json"), {"versions": versions, "cases": cases}, indent=1)
    sizes = ", ".join(f"{f} {os.path.getsize(os.path.join(out, f)) // 1024} KB" for f in sorted(os.listdir(out)))
    print(f"{name}: vocab {tok.get_vocab_size(with_added_tokens=True)}; {sizes}")


SPLIT_PATTERNS = [" ", "--", Regex(LLAMA3_PATTERN)]
SPLIT_TEXTS = ["the-final--countdown", "  a  b c ", "nodelimiter", " ", "   ", "--a---b--", "x - y -- z",
               "é ü  日本\t\n ", "don't  stop 123", ""]


def write_split_words():
    versions = {"python": platform.python_version(), "tokenizers": tokenizers.__version__}
    splits = [pre_tokenizers.Split(pattern, behavior=behavior, invert=invert) for pattern in SPLIT_PATTERNS
              for behavior in ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous")
              for invert in (False, True)]
    # Removed drops the leading spaces, so the first word no longer starts the input: no "▁" for it.
    splits.append(pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="removed"),
                                           pre_tokenizers.Metaspace(prepend_scheme="first", split=False)]))
    cases = [{"pre_tokenizer": json.loads(split.__getstate__()),
              "words": [[word for word, _ in split.pre_tokenize_str(text)] for text in SPLIT_TEXTS]}
             for split in splits]
    write_json(os.path.join(OUT_ROOT, "split-words.json"), {"versions": versions, "texts": SPLIT_TEXTS, "cases": cases},
               indent=1)
    print(f"split-words.json: {len(cases)} pre-tokenizers x {len(SPLIT_TEXTS)} texts")


def main():
    vocab, merges = train_bytelevel_model()
    for name, gpt2 in (("bytelevel", False), ("bytelevel-gpt2", True)):
        tok = bytelevel_tokenizer(vocab, merges, gpt2)
        write_fixture(name, tok, *bytelevel_configs(tok, gpt2), legacy_merges=gpt2)
    tok = bytelevel_tokenizer(vocab, merges, gpt2=False, smollm2=True)
    write_fixture("bytelevel-smollm2", tok, *bytelevel_configs(tok, gpt2=True),
                  model_fields={"continuing_subword_prefix": "", "end_of_word_suffix": ""})

    vocab, merges = train_sentencepiece_model()
    for name, style in (("sentencepiece", "legacy"), ("sentencepiece-metaspace", "metaspace"),
                        ("sentencepiece-metaspace-split", "split"), ("sentencepiece-unk", "unk"),
                        ("sentencepiece-nested", "nested")):
        nested = {"type": "Sequence", "normalizers": [
            {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}]},
            {"type": "Sequence", "normalizers": []},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        write_fixture(name, sentencepiece_tokenizer(vocab, merges, style), *sentencepiece_configs(style),
                      normalizer=nested if style == "nested" else None)

    vocab, merges = train_bytelevel_model(QWEN2_PATTERN, normalizers.NFC())
    write_fixture("bytelevel-qwen2", qwen2_tokenizer(vocab, merges), *qwen2_configs(qwen2_tokenizer(vocab, merges)),
                  model_fields={"continuing_subword_prefix": "", "end_of_word_suffix": ""})

    vocab, merges = train_sentencepiece_model(GEMMA_SPECIALS, prepend_scheme="never")
    write_fixture("sentencepiece-gemma", gemma_tokenizer(vocab, merges), *gemma_configs())
    write_fixture("sentencepiece-gemma3", gemma_tokenizer(vocab, merges, gemma3=True), *gemma_configs())

    write_split_words()


if __name__ == "__main__":
    main()
