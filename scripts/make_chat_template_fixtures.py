#!/usr/bin/env python3
"""Renders chat templates of each supported family the way transformers' apply_chat_template does (a sandboxed
Jinja environment with trim_blocks, lstrip_blocks, raise_exception and strftime_now; add_generation_prompt=True), for
PunicaServerTests to compare its built-in formatters against. Writes Tests/Fixtures/chat_templates/expected.json.

The templates are those the model families publish in tokenizer_config.json (tools branches left out where they
only apply to tool calls), plus the bundled model's own. Needs only jinja2: python3 -m pip install jinja2
"""
import datetime
import json
import pathlib

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parent.parent
# strftime_now renders this fixed day, so the fixture does not depend on when it was made.
TODAY = datetime.datetime(2025, 3, 9, 12, 0, tzinfo=datetime.timezone.utc)

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
LLAMA31_HEAD = """{{- bos_token }}
{%- if not date_string is defined %}
    DATE
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
LLAMA31 = LLAMA31_HEAD.replace("DATE", '{%- set date_string = "26 Jul 2024" %}')
LLAMA32 = LLAMA31_HEAD.replace("DATE", """{%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}""")
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
BUNDLED = json.loads((ROOT / "models" / "tokenizer_config.json").read_text())["chat_template"]

# Templates the server must refuse: variants of a family whose output its formatters would not reproduce, and an
# unknown family.
REFUSED = {
    "mistral": "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
               "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}",
    "phi-3": "{% for message in messages %}{% if message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n<|assistant|>\\n'}}"
             "{% elif message['role'] == 'assistant' %}{{message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}",
    "qwen3-thinking": CHATML.replace("{% endfor %}", "{% if message['role'] == 'assistant' %}<think>\\n\\n</think>{% endif %}{% endfor %}"),
    "gemma": "{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + message['role'] + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
             "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "  What is 2+2? \n"},
     {"role": "assistant", "content": " 4 "}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Again"}],
]

TEMPLATES = [
    ("llama-2", "Llama-2 [INST]", LLAMA2, "<s>", "</s>"),
    ("llama-3", "Llama-3 <|start_header_id|>", LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
    ("llama-3.1", "Llama-3 <|start_header_id|>", LLAMA31, "<|begin_of_text|>", "<|eot_id|>"),
    ("llama-3.2", "Llama-3 <|start_header_id|>", LLAMA32, "<|begin_of_text|>", "<|eot_id|>"),
    ("chatml", "ChatML <|im_start|>", CHATML, "", "<|im_end|>"),
    ("qwen2", "ChatML <|im_start|>", QWEN2, "", "<|im_end|>"),
    ("zephyr", "Zephyr <|user|>", ZEPHYR, "<s>", "</s>"),
    ("bundled", "role: content", BUNDLED, "<s>", "</s>"),
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def render(template, bos, eos, messages):
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = TODAY.strftime
    try:
        return {"prompt": environment.from_string(template).render(messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=True)}
    except jinja2.exceptions.TemplateError as error:
        return {"error": str(error)}


def main():
    fixture = {
        "generator": f"scripts/make_chat_template_fixtures.py, jinja2 {jinja2.__version__}",
        "strftime_now": TODAY.isoformat(),
        "templates": [
            {"name": name, "family": family, "template": template, "bos_token": bos, "eos_token": eos,
             "renders": [dict(messages=messages, **render(template, bos, eos, messages)) for messages in CONVERSATIONS]}
            for name, family, template, bos, eos in TEMPLATES
        ],
        "refused": [{"name": name, "template": template} for name, template in REFUSED.items()],
    }
    path = ROOT / "Tests" / "Fixtures" / "chat_templates" / "expected.json"
    path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
