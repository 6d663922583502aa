#!/usr/bin/env python3
"""Renders the real chat templates of current model families with transformers' own renderer, for PunicaServerTests
to compare its Jinja interpreter against. Writes Tests/Fixtures/chat_templates/expected.json.

THE TEMPLATES (Tests/Fixtures/chat_templates/templates/NAME.jinja) are the texts the models publish, copied from
huggingface/huggingface.js at commit fe42e68017ffc76d09922ea8f9b38a6964345710 (no network to the Hub here):
  - packages/jinja/test/e2e.test.js: the tests of @huggingface/jinja keep each model's chat_template under its Hub
    id ("meta-llama/Llama-3.1-8B-Instruct" ...);
  - packages/ollama-utils/src/chat-template-automap.ts: the `tokenizer.chat_template` of the GGUF files in Ollama's
    library ("library/gemma3:1b" ...), which llama.cpp's converter copies from the Hub repository's tokenizer_config.
SOURCES below names the entry of each. To copy them again (needs node):
    python3 scripts/make_chat_template_fixtures.py --extract /path/to/huggingface.js

THE RENDERS: every template over CONVERSATIONS (system or not, multi-turn, roles out of order, content as a list of
parts, tools, a tool-call round trip, reasoning), with add_generation_prompt true and, for two of them, false;
through transformers.utils.chat_template_utils.render_jinja_template (what apply_chat_template calls: an immutable
sandbox with trim_blocks, lstrip_blocks, loopcontrols, {% generation %}, raise_exception, strftime_now, tojson
without HTML escaping) with the template's special tokens. strftime_now is pinned to TODAY. A render that raises
records "ErrorType: message" instead of a prompt (raise_exception raises TemplateError).

RUN IT: pip install jinja2 transformers; python3 scripts/make_chat_template_fixtures.py
"""
import datetime
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "Tests" / "Fixtures" / "chat_templates"
TODAY = datetime.datetime(2025, 3, 9, 12, 0, 0)

E2E = "packages/jinja/test/e2e.test.js"
OLLAMA = "packages/ollama-utils/src/chat-template-automap.ts"
LLAMA3 = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
DEEPSEEK = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
QWEN = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
GEMMA = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}

# name: (file, entry, special tokens as the model's tokenizer_config.json sets them)
SOURCES = {
    "chatml": (E2E, "_base", {"eos_token": "<|im_end|>"}),
    "zephyr": (E2E, "HuggingFaceH4/zephyr-7b-beta (add_generation_prompt=true)", MISTRAL),
    "mistral-7b-v0.1": (E2E, "TheBloke/Mistral-7B-Instruct-v0.1-GPTQ", MISTRAL),
    "mixtral-8x7b": (E2E, "mistralai/Mixtral-8x7B-Instruct-v0.1", MISTRAL),
    "mistral-7b-v0.3-tools": (E2E, "mistralai/Mistral-7B-Instruct-v0.3 (JSON Schema)", MISTRAL),
    "mistral-nemo": (E2E, "mistralai/Mistral-Nemo-Instruct-2407", MISTRAL),
    "llama-3.1": (E2E, "meta-llama/Llama-3.1-8B-Instruct", LLAMA3),
    "llama-3.2": (OLLAMA, "library/llama3.2:3b", LLAMA3),
    "qwen2.5": (E2E, "Qwen/Qwen2.5-7B-Instruct", QWEN),
    "qwen3": (E2E, "Qwen/Qwen3-0.6B", QWEN),
    "gemma-2": (OLLAMA, "library/gemma2:2b", GEMMA),
    "gemma-3": (OLLAMA, "library/gemma3:1b", GEMMA),
    "phi-3": (OLLAMA, "library/phi3:3.8b", {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}),
    "phi-3.5": (OLLAMA, "library/phi3.5:3.8b", {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}),
    "phi-4": (OLLAMA, "library/phi4:14b", {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|dummy_85|>"}),
    "phi-4-mini": (OLLAMA, "library/phi4-mini:3.8b", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}),
    "phi-4-reasoning": (OLLAMA, "library/phi4-reasoning:14b", {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}),
    "smollm2": (OLLAMA, "library/smollm2:135m", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}),
    "smollm3": (E2E, "HuggingFaceTB/SmolLM3-3B", {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}),
    "deepseek-r1": (E2E, "deepseek-ai/DeepSeek-R1", DEEPSEEK),
    "deepseek-v3": (OLLAMA, "library/deepseek-v3:671b", DEEPSEEK),
}
# The bundled test model's own template (models/tokenizer_config.json).
BUNDLED = ("models/tokenizer_config.json", "chat_template", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and country, e.g. Paris, France"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
CONVERSATIONS = {
    "hello": {"messages": [{"role": "user", "content": "Hello"}]},
    "system-multi-turn": {"messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "  What is 2+2? \n"},
        {"role": "assistant", "content": " 4 "}, {"role": "user", "content": "And 3+3?"}]},
    "multi-turn": {"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke, «s'il te plaît»."}]},
    "two-users": {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Again"}]},
    "parts": {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "text", "text": "this."}]}]},
    "tools": {"tools": [WEATHER_TOOL], "messages": [
        {"role": "system", "content": "You can look up the weather."},
        {"role": "user", "content": "What's the weather in Paris?"}]},
    "tool-call": {"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function", "function": {
            "name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}}}]},
        {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather", "content": "{\"temperature\": 21.5}"}]},
    "reasoning": {"messages": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two and two make four."},
        {"role": "user", "content": "And 3+3?"}]},
}
# (conversation, add_generation_prompt, extra keyword arguments) for every template; tool conversations only for
# templates that read `tools`.
# Small templates for the parts of the language the model templates above leave out, rendered with the same
# environment and the variables of SNIPPET_VARIABLES.
SNIPPET_VARIABLES = {"items": [3, 1, 2], "words": ["b", "A", "c"], "user": {"name": "Ada", "tags": ["x", "y"], "age": 36},
                     "people": [{"name": "Bo", "age": 30}, {"name": "Al", "age": 25, "admin": True}], "text": "  Hello, World  ",
                     "nested": {"a": [1, 2.5, None, True], "b": {"c": "é\n\"q\""}}, "empty": [], "zero": 0}
SNIPPETS = [
    "{{ 1 + 2 * 3 - 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 10 / 4 }} {{ 1.5 + 1 }} {{ 'ab' * 3 }}",
    "{{ 'a' ~ 1 ~ none ~ true }} {{ [1, 'x', none, false, 2.0, {'k': [1]}] }} {{ none }}|{{ undefined_name }}|{{ user }}",
    "{{ text.strip() }}|{{ text.lstrip() }}|{{ text.rstrip() }}|{{ text | trim }}|{{ 'xxhixx'.strip('x') }}|{{ text.upper() }}|{{ text.lower() }}",
    "{{ 'hello world-wide'.title() }}|{{ 'hello world-wide' | title }}|{{ 'hELLO' | capitalize }}|{{ 'hELLO'.capitalize() }}",
    "{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}{{ 'a,b,c'.rsplit(',', 1) }}{{ 'x\ny\r\nz'.splitlines() }}",
    "{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abcabc'.replace('b', 'B') }}{{ 'abcabc'.replace('b', 'B', 1) }}{{ 'abc'.find('c') }}{{ 'aaa'.count('a') }}",
    "{{ '{} and {}'.format(1, 'two') }}|{{ '{0}{1}{0}'.format('a', 'b') }}|{{ '{name}!'.format(name='Ada') }}|{{ ', '.join(['a', 'b']) }}",
    "{{ items | length }} {{ items | first }} {{ items | last }} {{ items | sort }} {{ items | sort(reverse=true) }} {{ items | reverse | list }} {{ items | sum }} {{ items | max }} {{ items | min }}",
    "{{ words | sort }} {{ words | sort(case_sensitive=true) }} {{ words | join('-') }} {{ words | map('upper') | join }} {{ words | unique | list }}",
    "{{ people | map(attribute='name') | join(', ') }} {{ people | selectattr('admin') | map(attribute='name') | list }} {{ people | rejectattr('admin') | list | length }} {{ people | selectattr('age', 'gt', 26) | list | length }} {{ people | sort(attribute='age') | map(attribute='name') | list }}",
    "{{ items | select('odd') | list }} {{ items | reject('odd') | list }} {{ items | map('string') | list }} {{ ['1', '2'] | map('int') | sum }} {{ '3.5' | float }} {{ 'x' | int }} {{ 3.7 | int }} {{ 2.5 | round }} {{ 2.567 | round(2) }}",
    "{{ user | tojson }}|{{ nested | tojson }}|{{ nested | tojson(indent=2) }}|{{ nested | tojson(sort_keys=true) }}|{{ nested | tojson(separators=(',', ':')) }}|{{ 'é' | tojson(ensure_ascii=true) }}",
    "{{ user.items() | list | length }} {{ (user.items() | list)[1][1] }} {{ user.keys() | list }} {{ user.values() | list | length }} {{ user.get('name') }} {{ user.get('missing', 'dflt') }} {{ user.get('missing') }} {{ user['tags'][-1] }} {{ user.tags.0 }}",
    "{% for k, v in user | dictsort %}{{ k }}={{ v }};{% endfor %}{% for k, v in user.items() %}{{ loop.index }}{{ k }}{% endfor %}{{ user | items | list | length }}",
    "{{ items[1:] }} {{ items[:-1] }} {{ items[::-1] }} {{ items[::2] }} {{ 'abcdef'[1:4] }} {{ 'abcdef'[::-2] }} {{ items[10:] }} {{ items[-10:1] }}",
    "{% for x in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }}/{{ loop.previtem }}/{{ loop.nextitem }}/{{ loop.cycle('a', 'b') }} {% endfor %}",
    "{% for x in empty %}no{% else %}empty{% endfor %} {% for x in items if x > 1 %}{{ x }}{{ loop.length }}{% endfor %} {% for x in items %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% set ns = namespace(count=0, names=[]) %}{% for p in people %}{% set ns.count = ns.count + p.age %}{% set ns.names = ns.names + [p.name] %}{% endfor %}{{ ns.count }} {{ ns.names }}",
    "{% set x = 1 %}{% for i in items %}{% set x = x + i %}{{ x }}{% endfor %} {{ x }}{% if true %}{% set x = 5 %}{% endif %} {{ x }}",
    "{% macro greet(name, greeting='Hello', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('Ada') }} {{ greet('Bo', 'Hi') }} {{ greet('Cy', punct='?') }}",
    "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ user.name }}{% endcall %}",
    "{% set block %}  inner {{ 1 + 1 }}  {% endset %}[{{ block }}]{% set trimmed | trim %}  x  {% endset %}[{{ trimmed }}]{% filter upper %}shout {{ user.name }}{% endfilter %}",
    "{{ user.name is defined }} {{ user.nope is defined }} {{ nope is undefined }} {{ none is none }} {{ 'a' is string }} {{ user is mapping }} {{ items is iterable }} {{ 3 is number }} {{ 3 is integer }} {{ 3.0 is float }} {{ true is boolean }} {{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 'a' is in 'abc' }} {{ 1 is eq 1 }} {{ items is sequence }} {{ greet is defined }} {{ 0 is false }} {{ false is false }}",
    "{{ 1 in items }} {{ 5 not in items }} {{ 'name' in user }} {{ 'ell' in 'hello' }} {{ not zero }} {{ zero or 'fallback' }} {{ 1 and 2 }} {{ none or [] }} {{ 1 < 2 < 3 }} {{ 'a' < 'b' }} {{ [1, 2] == [1, 2] }} {{ 1 == 1.0 }} {{ true == 1 }}",
    "{{ 'yes' if items else 'no' }} {{ 'yes' if empty else 'no' }} [{{ 'only' if false }}] {{ undefined_name | default('d') }} {{ '' | default('d', true) }} {{ '' | default('d') }} {{ none | default('d') }}",
    "{{ 'a\nb\n\nc' | indent(2) }}|{{ 'a\nb' | indent(2, first=true) }}|{{ 'a\n\nb' | indent(2, blank=true) }}|{{ '<a href=\"x\">&</a>' | e }}|{{ 'one two  three' | wordcount }}|{{ -3 | abs }}",
    "{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(5, 0, -2) | list }} {{ dict(a=1, b='x') }} {{ namespace(a=1).a }} {{ {'k': 'v'}['k'] }} {{ ('a', 'b')[1] }}",
    "  {%- if true %}\n  kept\n  {%- endif %}\n  {% if true %}\n    lstrip and trim\n  {% endif %}\n{# comment #}\n  {#- stripped comment -#}  x  {{- ' tight ' -}}  y\n  {%+ if true %}plus{% endif %}\n{% raw %}{{ not rendered }}{% endraw %}\nend\n",
    "{{ raise_exception('Refused: ' ~ user.name) }}",
    "{{ user.name.nope.deeper }}",
    "{{ items + 'x' }}",
    "{{ strftime_now('%d %b %Y|%B %A %a %m %y %H:%M:%S %j') }}",
]
RENDERS = [(name, True, {}) for name in CONVERSATIONS] + [("system-multi-turn", False, {}), ("multi-turn", False, {})]
THINKING_OFF = ("multi-turn", True, {"enable_thinking": False})


def extract(checkout):
    """Copies the templates out of a huggingface.js checkout (evaluating the two source files' literals with node)."""
    checkout = pathlib.Path(checkout)
    e2e = (checkout / E2E).read_text().splitlines()
    start = next(i for i, line in enumerate(e2e) if line.startswith("const EXAMPLE_CHAT ="))
    end = next(i for i, line in enumerate(e2e) if line.startswith("function render("))
    e2e_js = "\n".join(e2e[start:end]) + "\nconsole.log(JSON.stringify({...TEST_DEFAULT_TEMPLATES, ...TEST_CUSTOM_TEMPLATES}));"
    ollama = (checkout / OLLAMA).read_text()
    ollama = ollama[ollama.index("export const"):].replace("export const", "const").replace(": OllamaChatTemplateMapEntry[]", "")
    ollama_js = ollama + "\nconsole.log(JSON.stringify(Object.fromEntries(OLLAMA_CHAT_TEMPLATE_MAPPING.map(e => [e.model, e.gguf]))));"
    entries = {
        E2E: {key: value["chat_template"] for key, value in json.loads(subprocess.check_output(["node"], input=e2e_js.encode())).items()},
        OLLAMA: json.loads(subprocess.check_output(["node"], input=ollama_js.encode())),
    }
    for name, (file, key, _) in SOURCES.items():
        (FIXTURES / "templates" / f"{name}.jinja").write_text(entries[file][key])
        print(f"templates/{name}.jinja <- {file} [{key}]")


def main():
    import jinja2
    import transformers
    import transformers.utils.chat_template_utils as chat_template_utils

    class PinnedDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return TODAY

    chat_template_utils.datetime = PinnedDatetime

    def render(template, tokens, conversation, add_generation_prompt, kwargs):
        chat = CONVERSATIONS[conversation]
        try:
            prompt = chat_template_utils.render_jinja_template(
                conversations=[chat["messages"]], tools=chat.get("tools"), chat_template=template,
                add_generation_prompt=add_generation_prompt, **tokens, **kwargs)[0][0]
            return {"prompt": prompt}
        except Exception as error:  # raise_exception's TemplateError, or a template bug (UndefinedError, TypeError...)
            return {"error": f"{type(error).__name__}: {error}"}

    bundled = json.loads((ROOT / BUNDLED[0]).read_text())[BUNDLED[1]]
    (FIXTURES / "templates" / "bundled.jinja").write_text(bundled)
    sources = dict(SOURCES, bundled=BUNDLED)
    templates = []
    for name, (file, key, tokens) in sources.items():
        template = (FIXTURES / "templates" / f"{name}.jinja").read_text()
        renders = [r for r in RENDERS if "tools" in template or "tools" not in CONVERSATIONS[r[0]]]
        if "enable_thinking" in template:
            renders.append(THINKING_OFF)
        origin = f"{BUNDLED[0]} {key}" if name == "bundled" else f"huggingface/huggingface.js@fe42e68 {file} [{key}]"
        templates.append({
            "name": name, "source": origin, "special_tokens": tokens,
            "renders": [dict(conversation=c, add_generation_prompt=g, kwargs=k, **render(template, tokens, c, g, k)) for c, g, k in renders],
        })
    snippets = []
    for text in SNIPPETS:
        try:
            snippets.append({"template": text, "prompt": chat_template_utils._compile_jinja_template(text).render(**SNIPPET_VARIABLES)})
        except Exception as error:
            snippets.append({"template": text, "error": f"{type(error).__name__}: {error}"})
    fixture = {
        "generator": f"scripts/make_chat_template_fixtures.py, transformers {transformers.__version__}, jinja2 {jinja2.__version__}",
        "strftime_now": TODAY.isoformat(),
        "conversations": CONVERSATIONS,
        "templates": templates,
        "snippet_variables": SNIPPET_VARIABLES,
        "snippets": snippets,
    }
    path = FIXTURES / "expected.json"
    path.write_text(json.dumps(fixture, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}: {sum(len(t['renders']) for t in templates)} renders of {len(templates)} templates")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--extract":
        extract(sys.argv[2])
    else:
        main()
